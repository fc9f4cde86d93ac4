"""One pre-norm Llama-style decoder block: RMSNorm -> GQA attention -> RMSNorm -> SwiGLU."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from conan_core.model.attention import ConanAttention
from conan_core.ops.attention.base import AttentionPlan


class ConanMLP(nn.Module):
    """SwiGLU feed-forward: ``down(silu(gate(x)) * up(x))``, no biases (Llama parameter names)."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)
        self.down_proj.conan_residual_projection = True  # read by the init (scaled_residual_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., hidden_size] -> [..., hidden_size]."""
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class ConanBlock(nn.Module):
    """``h + attn(norm(h))`` then ``+ mlp(norm(.))``. Parameter names match ``LlamaDecoderLayer``
    (``input_layernorm``, ``self_attn.*``, ``post_attention_layernorm``, ``mlp.*``), so Llama
    state dicts load as they are.

    ``norm_factory`` is a ``norms`` component (``make(hidden_size, eps) -> nn.Module``); the
    attention backend comes with the per-call plan. ``layer_idx`` is the block's KV-cache slot.
    """

    def __init__(self, config: Any, norm_factory: Any, layer_idx: int = 0):
        super().__init__()
        self.input_layernorm = norm_factory.make(config.hidden_size, config.rms_norm_eps)
        self.self_attn = ConanAttention(config.hidden_size, config.num_attention_heads,
                                        config.num_key_value_heads, config.head_dim, layer_idx)
        self.post_attention_layernorm = norm_factory.make(config.hidden_size, config.rms_norm_eps)
        self.mlp = ConanMLP(config.hidden_size, config.intermediate_size)

    def forward(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, plan: AttentionPlan,
                cache: Any = None, output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[B, L, hidden_size] -> ``([B, L, hidden_size], attention probabilities or None)``
        (see :meth:`ConanAttention.forward`). All arguments positional so that
        ``torch.utils.checkpoint`` sees ``hidden`` as an input."""
        attn, probs = self.self_attn(self.input_layernorm(hidden), cos, sin, plan, cache, output_attentions)
        hidden = hidden + attn
        return hidden + self.mlp(self.post_attention_layernorm(hidden)), probs
