"""``causal``: each token attends to itself and earlier tokens (LLM pretraining / SFT)."""

from __future__ import annotations

import torch

from conan_core.masks.base import ExactKind, Mask, MaskContext, MaskTensors


class CausalMask(Mask):
    """``M_ij = 1`` if ``i >= j`` else 0 (plus the padding rules of :mod:`conan_core.masks.base`)."""

    fixed_alpha = 0.0

    def value(self, t: MaskTensors, b: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return (j <= i).to(t.dtype)

    def exact_kind(self, ctx: MaskContext) -> ExactKind | None:
        return None if ctx.padded() or ctx.q_offset else "causal"

    def is_causal(self, ctx: MaskContext) -> bool:
        return True
