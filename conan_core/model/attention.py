"""Grouped-query self-attention of one Conan block; the kernel is an ``attention`` backend."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from conan_core.model.rope import apply_rope


class ConanAttention(nn.Module):
    """q/k/v/o projections (no bias, Llama parameter names), RoPE, then ``backend(q, k, v)``.

    ``backend`` is a component of the ``attention`` registry; it applies the per-call ``mask``
    (a ``masks`` component) for the ``ctx`` (a ``MaskContext``), handles GQA (``num_heads`` a
    multiple of ``num_kv_heads``) and the ``head_dim ** -0.5`` scale.
    """

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int, head_dim: int, backend: Any):
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.backend = backend
        self.q_proj = nn.Linear(hidden_size, num_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(num_heads * head_dim, hidden_size, bias=False)
        self.o_proj.conan_residual_projection = True  # read by the init (scaled_residual_init)

    def forward(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *,
                mask: Any, ctx: Any) -> torch.Tensor:
        """``hidden`` [B, L, hidden_size] -> [B, L, hidden_size]; ``cos``/``sin`` [B, 1, L, head_dim]."""
        batch, length, _ = hidden.shape
        q = self.q_proj(hidden).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(hidden).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(hidden).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        out = self.backend(q, k, v, mask=mask, ctx=ctx)  # [B, Hq, L, D]
        out = out.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)
        return self.o_proj(out)
