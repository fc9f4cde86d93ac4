"""Grouped-query self-attention of one Conan block; the kernel is an ``attention`` backend."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from conan_core.model.rope import apply_rope
from conan_core.ops.attention.base import AttentionPlan, check_inputs


class ConanAttention(nn.Module):
    """q/k/v/o projections (no bias, Llama parameter names), RoPE, then the plan's backend.

    The model prepares one :class:`~conan_core.ops.attention.base.AttentionPlan` per forward
    (backend, mask, context, bias / block mask) and every layer attends under it, so the layer
    itself is tensor work only. GQA: ``num_heads`` a multiple of ``num_kv_heads``; the scale is
    ``head_dim ** -0.5``. ``layer_idx`` is this layer's slot in a KV cache.
    """

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int, head_dim: int, layer_idx: int = 0):
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.layer_idx = layer_idx
        self.scale = 1.0 / math.sqrt(head_dim)
        self.q_proj = nn.Linear(hidden_size, num_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(num_heads * head_dim, hidden_size, bias=False)
        self.o_proj.conan_residual_projection = True  # read by the init (scaled_residual_init)

    def forward(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, plan: AttentionPlan,
                cache: Any = None, output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``hidden`` [B, Lq, hidden_size] -> ``(out [B, Lq, hidden_size], probs or None)``.

        ``cos``/``sin`` [B, 1, Lq, head_dim] (positions of the queries). With ``cache`` (a
        transformers ``Cache``) this layer's new keys/values are appended and attention runs over
        all ``plan.ctx.kv_len`` of them. ``output_attentions`` needs a plan of the ``eager``
        backend and returns its probabilities [B, num_heads, Lq, kv_len] in the value dtype."""
        batch, length, _ = hidden.shape
        q = self.q_proj(hidden).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(hidden).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(hidden).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        check_inputs(q, k, v, plan.ctx)
        probs = None
        if output_attentions:
            out, probs = plan.backend.attend_with_probs(q, k, v, plan, self.scale)
        else:
            out = plan.backend.attend(q, k, v, plan, self.scale)  # [B, Hq, Lq, D]
        out = out.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)
        return self.o_proj(out), probs
