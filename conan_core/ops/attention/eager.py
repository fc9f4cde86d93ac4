"""``eager``: plain matmul-softmax-matmul in the input dtype (the readable reference path)."""

from __future__ import annotations

import math

import torch

from conan_core.masks.base import Mask, MaskContext
from conan_core.ops.attention.base import AttentionBackend, AttentionPlan, repeat_kv


class EagerAttention(AttentionBackend):
    """Materialises the ``[B, Hq, Lq, Lk]`` scores. Matmuls run in the input dtype; the softmax
    accumulates in at least float32 (bf16 / fp16 exponent sums lose too much) and the
    probabilities are cast back to the input dtype before ``@ v``. Run on ``.double()`` inputs it
    is a float64 reference. ``mask.apply``:

    * ``log_bias``: ``softmax(s + log M)``;
    * ``prob_scale``: ``p = softmax(s)`` over open keys, ``p * M``, divided by its row sum
      (closed keys are dropped before the softmax so its max is over open keys: no underflow to
      an all-zero row; the renormalisation cancels that change of normaliser exactly).

    The only backend that can return the attention probabilities
    (:meth:`attend_with_probs`); models route ``output_attentions=True`` calls through it.
    """

    def prepare(self, mask: Mask, ctx: MaskContext, dtype: torch.dtype, device: torch.device) -> AttentionPlan:
        if mask.apply == "prob_scale":
            acc = torch.promote_types(dtype, torch.float32)
            return AttentionPlan(self, mask, ctx, "prob_scale",
                                 matrix=mask.matrix(ctx, acc).to(device).unsqueeze(1))
        return AttentionPlan(self, mask, ctx, "log_bias", bias=mask.bias(ctx, dtype).to(device))

    def attend_with_probs(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: AttentionPlan,
                          scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(out [B, Hq, Lq, D], probs [B, Hq, Lq, Lk])``, both in v's dtype; each row of
        ``probs`` sums to 1 over the keys and is 0 on closed keys."""
        if scale is None:
            scale = 1.0 / math.sqrt(q.shape[-1])
        groups = q.shape[1] // k.shape[1]
        k, v = repeat_kv(k, groups), repeat_kv(v, groups)
        acc = torch.promote_types(q.dtype, torch.float32)
        s = (q @ k.transpose(-1, -2)) * scale
        self.last_path = plan.path
        if plan.path == "prob_scale":
            m = plan.matrix
            p = torch.softmax(s.to(acc).masked_fill(m == 0, -math.inf), dim=-1)
            p = p * m
            p = p / p.sum(dim=-1, keepdim=True)
        else:
            p = torch.softmax(s + plan.bias, dim=-1, dtype=acc)
        p = p.to(v.dtype)
        return p @ v, p

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: AttentionPlan,
               scale: float | None = None) -> torch.Tensor:
        return self.attend_with_probs(q, k, v, plan, scale)[0]

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: Mask,
                ctx: MaskContext, scale: float) -> torch.Tensor:
        return self.attend(q, k, v, self.planned(mask, ctx, q), scale)
