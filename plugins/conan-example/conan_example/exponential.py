"""``example/exponential``: alpha(t) = (exp(k·t/τ) − 1) / (exp(k) − 1).

Opens the mask slowly, then fast (k > 0), or fast then slowly (k < 0); k → 0 tends to the
paper's linear schedule. A pure function of the step, like every schedule, so resuming a run
reproduces the exact mask.
"""

from __future__ import annotations

import math

from pydantic import Field

from conan_core.registry import ComponentConfig
from conan_core.schedules.base import MaskSchedule


class ExponentialSchedule(MaskSchedule):
    class Config(ComponentConfig):
        rate: float = Field(3.0, description="k: > 0 opens late, < 0 opens early; |k| < 1e-6 is linear")
        total_steps: int | None = Field(None, gt=0, description="tau; None = the stage's step count")

    def alpha(self, step: int, total_steps: int) -> float:
        tau = self.config.total_steps or total_steps
        if tau <= 0:
            return 1.0
        frac = min(max(step / tau, 0.0), 1.0)
        k = self.config.rate
        if abs(k) < 1e-6:
            return frac
        return (math.exp(k * frac) - 1.0) / (math.exp(k) - 1.0)
