"""``eager``: plain matmul-softmax-matmul in the input dtype (the readable reference path)."""

from __future__ import annotations

import math

import torch

from conan_core.masks.base import Mask, MaskContext
from conan_core.ops.attention.base import AttentionBackend, repeat_kv


class EagerAttention(AttentionBackend):
    """Materialises the ``[B, Hq, L, L]`` scores. Matmuls run in the input dtype; the softmax
    accumulates in at least float32 (bf16 / fp16 exponent sums lose too much) and the
    probabilities are cast back to the input dtype before ``@ v``. Run on ``.double()`` inputs it
    is a float64 reference. ``mask.apply``:

    * ``log_bias``: ``softmax(s + log M)``;
    * ``prob_scale``: ``p = softmax(s)`` over open keys, ``p * M``, divided by its row sum
      (closed keys are dropped before the softmax so its max is over open keys: no underflow to
      an all-zero row; the renormalisation cancels that change of normaliser exactly).
    """

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: Mask,
                ctx: MaskContext, scale: float) -> torch.Tensor:
        groups = q.shape[1] // k.shape[1]
        k, v = repeat_kv(k, groups), repeat_kv(v, groups)
        acc = torch.promote_types(q.dtype, torch.float32)
        s = (q @ k.transpose(-1, -2)) * scale
        if mask.apply == "prob_scale":
            self.last_path = "prob_scale"
            m = self.per_batch(mask, ctx, ("matrix", acc, q.device),
                               lambda: mask.matrix(ctx, acc).to(q.device).unsqueeze(1))
            p = torch.softmax(s.to(acc).masked_fill(m == 0, -math.inf), dim=-1)
            p = p * m
            p = p / p.sum(dim=-1, keepdim=True)
        else:
            self.last_path = "log_bias"
            bias = self.per_batch(mask, ctx, ("bias", q.dtype, q.device),
                                  lambda: mask.bias(ctx, q.dtype).to(q.device))
            p = torch.softmax(s + bias, dim=-1, dtype=acc)
        return p.to(v.dtype) @ v
