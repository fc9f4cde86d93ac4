"""``accelerating``: alpha = (t / tau)^2 (paper ablation: slow start, fast finish)."""

from __future__ import annotations

from conan_core.schedules.base import RampSchedule


class AcceleratingSchedule(RampSchedule):
    """``shape(x) = x**2``: with default fields ``alpha(t) = (t / T)^2``."""

    def shape(self, x: float) -> float:
        return x * x
