"""Model families for the common-model tests: Conan and, as the control, transformers' Llama built
with the same architecture (imported as a module by tests/model/test_common_*.py)."""

import inspect
from dataclasses import dataclass

import torch
from transformers import LlamaForCausalLM, LlamaModel

from conan_core.model import ConanConfig, ConanForCausalLM, ConanModel
from conan_core.model.llama import to_llama_config

ARCH_FIELDS = set(inspect.signature(ConanConfig.__init__).parameters) - {"self", "kwargs"}
BATCH, SEQ, VOCAB, LAYERS, HEADS, KV_HEADS, HEAD_DIM, HIDDEN = 4, 7, 99, 2, 4, 2, 8, 32


def conan_config(**overrides) -> ConanConfig:
    kwargs = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                  num_key_value_heads=KV_HEADS, head_dim=HEAD_DIM, intermediate_size=37,
                  max_position_embeddings=64, rope_theta=1000.0, rms_norm_eps=1e-5, pad_token_id=0)
    kwargs.update(overrides)
    return ConanConfig(**kwargs)


@dataclass(frozen=True)
class Family:
    """One architecture under test: its base and causal-LM classes and a tiny config."""

    name: str
    base: type
    lm: type

    def config(self, **overrides):
        """The tiny config; architecture fields go through ConanConfig (and its Llama twin), the
        rest (output flags, ``_attn_implementation``) are set on the result as a user would."""
        arch = {k: v for k, v in overrides.items() if k in ARCH_FIELDS}
        config = conan_config(**arch)
        if self.name == "llama":
            config = to_llama_config(config)
        for key, value in overrides.items():
            if key not in ARCH_FIELDS:
                setattr(config, "_attn_implementation" if key == "attn_implementation" else key, value)
        return config

    def model(self, kind: str = "lm", seed: int = 0, **overrides):
        torch.manual_seed(seed)
        return getattr(self, kind)(self.config(**overrides)).eval()


FAMILIES = {"conan": Family("conan", ConanModel, ConanForCausalLM),
            "llama": Family("llama", LlamaModel, LlamaForCausalLM)}


def inputs(seed: int = 0, batch: int = BATCH, seq: int = SEQ, padding: str = "right"):
    """``(input_ids [B, L], attention_mask [B, L])``: token ids in [3, VOCAB) and a 0/1 mask whose
    row ``b`` has ``L - b`` real tokens (at least 2), padded on ``padding``'s side."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch, seq), generator=g)
    lengths = torch.tensor([max(seq - b, 2) for b in range(batch)])
    right = (torch.arange(seq)[None] < lengths[:, None]).long()
    if padding == "right":
        return ids, right
    if padding == "left":
        return ids, right.flip(-1)
    raise ValueError(padding)


def positions_from(attention_mask: torch.Tensor) -> torch.Tensor:
    """transformers' generation rule: ``cumsum(mask) - 1``, padding positions set to 1."""
    return (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)
