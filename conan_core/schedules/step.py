"""``step``: alpha jumps from start to end at one point (the "abrupt switch" ablation)."""

from __future__ import annotations

from pydantic import Field

from conan_core.schedules.base import RampSchedule


class StepSchedule(RampSchedule):
    """``shape(x) = 0`` for ``x < at``, 1 from ``at`` on: alpha switches from ``start`` to ``end``
    at fraction ``at`` of the ramp window (``at=0`` switches at the first ramp step)."""

    class Config(RampSchedule.Config):
        at: float = Field(0.5, ge=0.0, le=1.0, description="fraction of the ramp window where alpha jumps")

    def shape(self, x: float) -> float:
        return 0.0 if x < self.config.at else 1.0
