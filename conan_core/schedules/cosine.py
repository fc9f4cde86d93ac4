"""``cosine``: alpha = 0.5 - 0.5 cos(pi t / tau) (slow at both ends)."""

from __future__ import annotations

import math

from conan_core.schedules.base import RampSchedule


class CosineSchedule(RampSchedule):
    """``shape(x) = 0.5 - 0.5 cos(pi x)``; exactly 0 and 1 at the ends of the window."""

    def shape(self, x: float) -> float:
        return 0.5 - 0.5 * math.cos(math.pi * x)
