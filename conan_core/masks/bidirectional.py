"""``bidirectional``: every token attends to every real token (supervised stage and inference)."""

from __future__ import annotations

import torch

from conan_core.masks.base import ExactKind, Mask, MaskContext, MaskTensors


class BidirectionalMask(Mask):
    """``M_ij = 1`` for all real keys (plus the padding rules of :mod:`conan_core.masks.base`)."""

    fixed_alpha = 1.0

    def value(self, t: MaskTensors, b: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(i + j, dtype=t.dtype)

    def exact_kind(self, ctx: MaskContext) -> ExactKind | None:
        return None if ctx.padded() else "bidirectional"
