"""``constant``: alpha fixed for the whole stage (0 = causal, 1 = bidirectional as a soft mask)."""

from __future__ import annotations

from pydantic import Field

from conan_core.schedules.base import MaskSchedule


class ConstantSchedule(MaskSchedule):
    """``alpha(t) = value`` for every step. Has no ramp, so no warm-up / hold fields."""

    class Config(MaskSchedule.Config):
        value: float = Field(1.0, ge=0.0, le=1.0, description="alpha at every step")

    def alpha(self, step: int, total_steps: int | None = None) -> float:
        return float(self.config.value)
