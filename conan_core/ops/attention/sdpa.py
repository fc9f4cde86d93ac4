"""``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` with exact fast paths."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from conan_core.masks.base import Mask, MaskContext
from conan_core.ops.attention.base import AttentionBackend, AttentionPlan, repeat_kv
from conan_core.registry import ComponentConfig

SDPAPath = Literal["causal", "none", "bias"]


class SDPAAttention(AttentionBackend):
    """SDPA with one of three paths, chosen by :meth:`plan` and recorded in ``last_path``:

    * ``"causal"``: ``is_causal=True`` when the mask is exactly causal (no padding);
    * ``"none"``: no mask when it is exactly bidirectional (no padding) — both let SDPA pick its
      flash / memory-efficient kernels;
    * ``"bias"``: a float additive bias ``log M`` ``[B, 1, Lq, Lk]`` in the query dtype otherwise
      (also whenever queries are fewer than keys: ``is_causal`` has no query offset).

    ``mask.apply == "prob_scale"`` takes the bias path too: "softmax, times M, renormalise" is the
    same function as ``softmax(s + log M)`` (``p_ij M_ij / sum_k p_ik M_ik = exp(s_ij + log M_ij) /
    sum_k exp(s_ik + log M_ik)``), and the tests check both against the float64 reference.

    GQA: ``enable_gqa=True`` on the causal / no-mask paths. On the bias path k/v are expanded on
    CUDA, because the memory-efficient kernel (the fused one that takes a float bias) does not
    take ``enable_gqa``; the expanded k/v cost less than the L x L bias.
    """

    class Config(ComponentConfig):
        dispatch: bool = Field(True, description="use is_causal / no-mask when the mask is exactly "
                                                 "causal / bidirectional; False always passes the bias")

    def plan(self, mask: Mask, ctx: MaskContext) -> SDPAPath:
        """Which path a call with this mask and context takes."""
        kind = mask.exact_kind(ctx) if self.config.dispatch else None
        if kind == "causal":
            return "causal"
        if kind == "bidirectional":
            return "none"
        return "bias"

    def prepare(self, mask: Mask, ctx: MaskContext, dtype: torch.dtype, device: torch.device) -> AttentionPlan:
        path = self.plan(mask, ctx)
        bias = mask.bias(ctx, dtype).to(device) if path == "bias" else None
        return AttentionPlan(self, mask, ctx, path, bias=bias)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: AttentionPlan,
               scale: float | None = None) -> torch.Tensor:
        path = plan.path
        self.last_path = path
        groups = q.shape[1] // k.shape[1]
        if path == "causal":
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale,
                                                  enable_gqa=groups > 1)
        if path == "none":
            return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=groups > 1)
        if q.device.type == "cuda" and groups > 1:
            k, v, groups = repeat_kv(k, groups), repeat_kv(v, groups), 1
        return F.scaled_dot_product_attention(q, k, v, attn_mask=plan.bias, scale=scale,
                                              enable_gqa=groups > 1)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: Mask,
                ctx: MaskContext, scale: float) -> torch.Tensor:
        return self.attend(q, k, v, self.planned(mask, ctx, q), scale)
