"""``soft``: the Conan-embedding-v2 soft mask (RECIPE §3), causal -> bidirectional as alpha 0 -> 1."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from conan_core.masks.base import ApplyMode, ExactKind, Mask, MaskContext, MaskTensors
from conan_core.registry import ComponentConfig, component_field


class SoftMask(Mask):
    """Soft mask of the weakly-supervised stage. With 1-based query ``i``, key ``j`` and real
    length ``l`` of the sequence::

        M_ij = 1                      if i >= j   (the causal part is always open)
        M_ij = min(alpha * l / i, 1)  if i <  j   (row_scaling="l_over_i", default)
        M_ij = min(alpha * i / l, 1)  if i <  j   (row_scaling="i_over_l", the translated Eq. 4)

    With padding that is not on the right (``ctx.valid``), ``i`` is the query's rank among the
    real tokens and ``l`` their count, so the real tokens get the unpadded sequence's mask.
    ``alpha = 0`` gives exactly the causal mask; with ``l_over_i``, ``alpha = 1`` gives exactly the
    bidirectional mask (``l / i >= 1`` for every real row), and earlier rows open first. Padding
    rules of :mod:`conan_core.masks.base` apply on top. ``alpha`` comes from the context; the
    trainer gets it from :meth:`alpha` (the configured schedule) each step.
    """

    class Config(ComponentConfig):
        schedule: dict[str, Any] = component_field(
            "mask_schedules", "linear", description="schedule giving alpha(step, total_steps)")
        row_scaling: Literal["l_over_i", "i_over_l"] = Field(
            "l_over_i", description="off-causal value: min(alpha*l/i, 1) (paper prose, reaches the "
                                    "bidirectional mask) or min(alpha*i/l, 1) (translated Eq. 4)")
        apply: Literal["log_bias", "prob_scale"] = Field(
            "log_bias", description="log_bias: add log(M) to the logits; prob_scale: multiply the "
                                    "softmax probabilities by M and renormalise (same function)")

    def __init__(self, config: Config, **runtime):
        super().__init__(config)
        from conan_core.registries import REGISTRIES  # late: registries is the one list of keys

        self.schedule = REGISTRIES["mask_schedules"].build(config.schedule, path="schedule")

    @property
    def apply(self) -> ApplyMode:
        return self.config.apply

    def alpha(self, step: int, total_steps: int | None = None) -> float:
        """The schedule's alpha in [0, 1] at 0-based ``step`` of a stage of ``total_steps``."""
        return self.schedule.alpha(step, total_steps)

    def value(self, t: MaskTensors, b: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        # 1-based query index among the real tokens; clamps: padding rows (rank 0 before the first
        # real token, or an empty sequence) would divide by 0, and the base replaces them anyway
        row = (t.token_index(b, i) + 1).clamp_min(1).to(t.dtype)
        length = t.lengths[b].clamp_min(1).to(t.dtype)
        if self.config.row_scaling == "l_over_i":
            frac = t.alpha * length / row
        else:
            frac = t.alpha * row / length
        return torch.where(j <= i, 1.0, frac.clamp(max=1.0))

    def exact_kind(self, ctx: MaskContext) -> ExactKind | None:
        if ctx.padded():
            return None
        if ctx.alpha == 0.0:
            return None if ctx.q_offset else "causal"
        if ctx.alpha == 1.0 and self.config.row_scaling == "l_over_i":
            return "bidirectional"
        return None

    def is_causal(self, ctx: MaskContext) -> bool:
        return ctx.alpha == 0.0

    def has_fractional(self, ctx: MaskContext) -> bool:
        if ctx.alpha == 0.0:
            return False
        return not (ctx.alpha == 1.0 and self.config.row_scaling == "l_over_i")
