"""``conan``: the Conan decoder (Llama-style block) built from the run config."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import Field, model_validator

from conan_core.backbones.base import Backbone
from conan_core.backbones.lora import LoraSpec
from conan_core.registry import ComponentConfig, component_field


class ConanBackbone(Backbone):
    """Builds :class:`~conan_core.model.ConanForCausalLM`; defaults are the ``tiny`` architecture
    (``conan_core.model.sizes.ARCHITECTURES``); presets set the ``conan-1.4b`` sizes."""

    class Config(ComponentConfig):
        hidden_size: int = Field(64, gt=0, description="model width (paper: 3584)")
        num_hidden_layers: int = Field(2, gt=0, description="decoder blocks (paper: 8)")
        num_attention_heads: int = Field(4, gt=0, description="query heads (paper: 32)")
        num_key_value_heads: int = Field(2, gt=0, description="key/value heads, GQA (paper: 8)")
        head_dim: int = Field(16, gt=0, description="per-head width, even (paper: 112)")
        intermediate_size: int = Field(172, gt=0, description="SwiGLU width (paper: 8192)")
        max_position_embeddings: int = Field(512, gt=0, description="longest sequence (paper: 32768)")
        rope_theta: float = Field(10000.0, gt=0, description="RoPE base (not in the paper; 1e6 at 32k)")
        rms_norm_eps: float = Field(1e-6, gt=0, description="RMSNorm epsilon")
        tie_word_embeddings: bool = Field(False, description="share input embedding and LM head (paper: untied)")
        initializer_range: float = Field(0.02, gt=0, description="std of the normal init")
        scaled_residual_init: bool = Field(False, description="divide o_proj/down_proj init std by sqrt(2 * layers)")
        attention: dict[str, Any] = component_field("attention", "sdpa", description="attention kernel")
        norm: dict[str, Any] = component_field("norms", "torch", description="RMSNorm implementation")
        gradient_checkpointing: bool = Field(False, description="recompute blocks in backward to save memory")
        checkpoint_every: int = Field(1, ge=1, description="with gradient_checkpointing: recompute blocks 0, n, "
                                      "2n, ... (1 = every block); the others keep their activations (faster)")
        lora: LoraSpec | None = Field(None, description="LoRA adapters (peft) on linear layers; only they "
                                                        "train, each stage's final/ holds the merged weights")

        @model_validator(mode="after")
        def _shapes(self):
            if self.num_attention_heads % self.num_key_value_heads:
                raise ValueError(f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                                 f"num_key_value_heads ({self.num_key_value_heads})")
            if self.head_dim % 2:
                raise ValueError(f"head_dim must be even for RoPE (got {self.head_dim})")
            if self.lora is not None:
                # checked here so `conan validate` names a wrong layer before any run starts
                from conan_core.backbones.lora import check_targets

                check_targets(self.lora, conan_linear_names(), "the conan backbone")
            return self

    def to_hf_config(self, vocab_size: int):
        """The :class:`~conan_core.model.ConanConfig` of this backbone for ``vocab_size`` tokens."""
        from conan_core.model import ConanConfig

        c = self.config
        return ConanConfig(
            vocab_size=vocab_size, hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers,
            num_attention_heads=c.num_attention_heads, num_key_value_heads=c.num_key_value_heads,
            head_dim=c.head_dim, intermediate_size=c.intermediate_size,
            max_position_embeddings=c.max_position_embeddings, rope_theta=c.rope_theta,
            rms_norm_eps=c.rms_norm_eps, tie_word_embeddings=c.tie_word_embeddings,
            initializer_range=c.initializer_range, scaled_residual_init=c.scaled_residual_init,
            attention_backend=_compact(c.attention), norm=_compact(c.norm))

    def build(self, vocab_size: int, *, meta: bool = False):
        """A freshly initialised ``ConanForCausalLM`` (float32, CPU), or with ``meta=True`` one on
        the meta device (no memory; for counting, planning or sharded materialisation)."""
        import torch

        from conan_core.model import ConanForCausalLM

        config = self.to_hf_config(vocab_size)
        if meta:
            with torch.device("meta"):
                model = ConanForCausalLM(config)
        else:
            model = ConanForCausalLM(config)
        if self.config.gradient_checkpointing:
            enable_checkpointing(model, every_n_layers=self.config.checkpoint_every)
        return self.adapt(model)


@functools.lru_cache(maxsize=1)
def conan_linear_names() -> list[str]:
    """Leaf names of the Conan decoder's linear layers (a one-layer model on the meta device)."""
    import torch

    from conan_core.backbones.lora import linear_names
    from conan_core.model import ConanConfig, ConanForCausalLM

    with torch.device("meta"):
        model = ConanForCausalLM(ConanConfig(vocab_size=8, num_hidden_layers=1))
    return linear_names(model)


def enable_checkpointing(model: Any, every_n_layers: int = 1) -> None:
    """Turn on non-reentrant activation checkpointing (transformers 4.x and 5.x) of every block, or
    of blocks 0, n, 2n, ... with ``every_n_layers`` = n (Conan models; others checkpoint every block)."""
    enable = getattr(model, "activation_checkpointing_enable", None)  # 5.x name; 4.x has only the old one
    if enable is None:
        enable = model.gradient_checkpointing_enable
    enable({"use_reentrant": False})
    if every_n_layers != 1:
        from conan_core.model import ConanModel

        for module in model.modules():
            if isinstance(module, ConanModel):
                module.checkpoint_every = every_n_layers


def _compact(spec: dict[str, Any]) -> str | dict[str, Any]:
    """A bare key when the spec holds nothing but its type (keeps config.json readable)."""
    return spec["type"] if set(spec) == {"type"} else dict(spec)
