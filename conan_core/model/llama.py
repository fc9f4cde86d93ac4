"""Interop with transformers' Llama: equivalent configs (state dicts already share names).

``ConanForCausalLM`` and ``LlamaForCausalLM`` built from matching configs have the same parameter
names and shapes, so ``load_state_dict`` works both ways; with the causal mask they compute the
same function (tests/model/test_llama_parity.py).
"""

from __future__ import annotations

from typing import Any

from conan_core.model.configuration import ConanConfig


def to_llama_config(config: ConanConfig, **overrides: Any):
    """A ``transformers.LlamaConfig`` with the same architecture as ``config``."""
    from transformers import LlamaConfig

    kwargs: dict[str, Any] = dict(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads, head_dim=config.head_dim,
        intermediate_size=config.intermediate_size, max_position_embeddings=config.max_position_embeddings,
        rope_theta=config.rope_theta, rms_norm_eps=config.rms_norm_eps,
        tie_word_embeddings=config.tie_word_embeddings, initializer_range=config.initializer_range,
        hidden_act="silu", attention_bias=False, mlp_bias=False, use_cache=False,
        pad_token_id=config.pad_token_id, bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id)
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


def from_llama_config(llama_config: Any, **overrides: Any) -> ConanConfig:
    """A :class:`ConanConfig` with the architecture of a ``LlamaConfig`` (biases must be off)."""
    if getattr(llama_config, "attention_bias", False) or getattr(llama_config, "mlp_bias", False):
        from conan_core.errors import ConanError

        raise ConanError("this Llama config uses attention/MLP biases, which the Conan block has not")
    rope_theta = getattr(llama_config, "rope_theta", None)
    if rope_theta is None:  # transformers 5 keeps it in rope_parameters
        rope_theta = (getattr(llama_config, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
    heads = llama_config.num_attention_heads
    kwargs: dict[str, Any] = dict(
        vocab_size=llama_config.vocab_size, hidden_size=llama_config.hidden_size,
        num_hidden_layers=llama_config.num_hidden_layers, num_attention_heads=heads,
        num_key_value_heads=getattr(llama_config, "num_key_value_heads", None) or heads,
        head_dim=getattr(llama_config, "head_dim", None) or llama_config.hidden_size // heads,
        intermediate_size=llama_config.intermediate_size,
        max_position_embeddings=llama_config.max_position_embeddings, rope_theta=rope_theta,
        rms_norm_eps=llama_config.rms_norm_eps, tie_word_embeddings=llama_config.tie_word_embeddings,
        initializer_range=llama_config.initializer_range)
    kwargs.update(overrides)
    return ConanConfig(**kwargs)
