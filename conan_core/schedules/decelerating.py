"""``decelerating``: alpha = 1 - (1 - t / tau)^2 (paper ablation: fast start, slow finish)."""

from __future__ import annotations

from conan_core.schedules.base import RampSchedule


class DeceleratingSchedule(RampSchedule):
    """``shape(x) = 1 - (1 - x)**2``: with default fields ``alpha(t) = 1 - (1 - t / T)^2``."""

    def shape(self, x: float) -> float:
        return 1.0 - (1.0 - x) ** 2
