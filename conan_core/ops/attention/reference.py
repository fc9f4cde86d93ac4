"""Float64 reference attention for tests and benchmarks (no backend, no registry key).

Written as the RECIPE's definition, "scale ``exp(score)`` by ``M_ij`` and renormalise", on float64
copies of the inputs: the slow, obvious version every backend is compared with.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from conan_core.ops.attention.base import check_inputs, repeat_kv

if TYPE_CHECKING:
    from conan_core.masks.base import Mask, MaskContext


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: "Mask",
                        ctx: "MaskContext", scale: float | None = None) -> torch.Tensor:
    """``out_i = sum_j w_ij v_j`` with ``w_ij = M_ij exp(s_ij - c_i) / sum_k M_ik exp(s_ik - c_i)``,
    ``s = q k^T * scale``, ``c_i`` the max over open keys (only for range). Float64 ``[B, Hq, L, D]``,
    differentiable (so it also gives reference gradients)."""
    check_inputs(q, k, v, ctx)
    q64, k64, v64 = q.double(), k.double(), v.double()
    groups = q.shape[1] // k.shape[1]
    k64, v64 = repeat_kv(k64, groups), repeat_kv(v64, groups)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    m = mask.matrix(ctx, torch.float64).to(q.device).unsqueeze(1)
    s = (q64 @ k64.transpose(-1, -2)) * scale
    c = s.masked_fill(m == 0, -math.inf).amax(dim=-1, keepdim=True).detach()
    w = m * torch.exp(s.masked_fill(m == 0, -math.inf) - c)
    return (w / w.sum(dim=-1, keepdim=True)) @ v64
