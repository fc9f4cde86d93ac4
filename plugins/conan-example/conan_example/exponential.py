"""``example/exponential``: alpha(t) = (exp(k·t/τ) − 1) / (exp(k) − 1).

Opens the mask slowly, then fast (k > 0), or fast then slowly (k < 0); k → 0 tends to the
paper's linear schedule. A pure function of the step, like every schedule, so resuming a run
reproduces the exact mask.
"""

from __future__ import annotations

import math

from pydantic import Field

from conan_core.schedules.base import MaskSchedule


class ExponentialSchedule(MaskSchedule):
    class Config(MaskSchedule.Config):
        rate: float = Field(3.0, description="k: > 0 opens late, < 0 opens early; |k| < 1e-6 is linear")

    def alpha(self, step: int, total_steps: int | None = None) -> float:
        tau = self.resolve_total(total_steps)  # config's total_steps, else the stage's step count
        frac = min(max(step / tau, 0.0), 1.0)
        k = self.config.rate
        if abs(k) < 1e-6:
            return frac
        return (math.exp(k * frac) - 1.0) / (math.exp(k) - 1.0)
