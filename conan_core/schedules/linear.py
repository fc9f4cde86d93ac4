"""``linear``: alpha = t / tau (RECIPE §3, the paper's default and best schedule)."""

from __future__ import annotations

from conan_core.schedules.base import RampSchedule


class LinearSchedule(RampSchedule):
    """``shape(x) = x``: with default fields ``alpha(t) = t / T``."""

    def shape(self, x: float) -> float:
        return x
