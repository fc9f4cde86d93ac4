"""``document``: packed sequences; a token attends only within its own document."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from conan_core.masks.base import ExactKind, Mask, MaskContext, MaskTensors
from conan_core.registry import ComponentConfig


class DocumentMask(Mask):
    """Block-diagonal mask for packed rows: ``M_ij = 1`` iff ``segment_ids[i] == segment_ids[j]``
    and (``within="causal"``) ``i >= j``. ``ctx.segment_ids`` is a LongTensor [B, L]; without it
    each row is a single document (then the mask equals ``causal`` / ``bidirectional``). Padding
    rules of :mod:`conan_core.masks.base` apply on top, whatever id the padding tokens carry.
    """

    class Config(ComponentConfig):
        within: Literal["causal", "bidirectional"] = Field(
            "causal", description="attention inside one document: causal (pretraining on packed "
                                  "rows) or bidirectional (packed embedding inputs)")

    fixed_alpha = 0.0

    def __init__(self, config: Config, **runtime):
        super().__init__(config)
        self.fixed_alpha = 0.0 if config.within == "causal" else 1.0

    def value(self, t: MaskTensors, b: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        if t.segment_ids is None:
            same = torch.ones_like(i + j, dtype=torch.bool)
        else:
            same = t.segment_ids[b, i] == t.segment_ids[b, j]
        if self.config.within == "causal":
            same = same & (j <= i)
        return same.to(t.dtype)

    def exact_kind(self, ctx: MaskContext) -> ExactKind | None:
        if ctx.padded() or (ctx.q_offset and self.config.within == "causal"):
            return None
        seg = ctx.segment_ids
        if seg is not None and not bool((seg == seg[:, :1]).all()):
            return None
        return self.config.within

    def is_causal(self, ctx: MaskContext) -> bool:
        return self.config.within == "causal"
