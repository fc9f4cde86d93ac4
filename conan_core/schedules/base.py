"""Base classes of mask schedules (registry kind ``mask_schedules``).

A schedule is a pure function ``alpha(step, total_steps) -> float`` in [0, 1]: a resumed run
reproduces the exact mask of every step. :class:`RampSchedule` holds the logic every ramp shares
(warm-up, hold, start/end values, clamping); a ramp file only defines its curve ``shape(x)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from pydantic import Field

from conan_core.errors import ConanError
from conan_core.registry import ComponentConfig


class MaskSchedule(ABC):
    """``alpha(step, total_steps) -> float`` in [0, 1]. ``step`` is 0-based;
    ``alpha(total, total)`` is the end value. ``total_steps`` in the config, when set, wins over the
    value passed at call time (the stage's step count)."""

    class Config(ComponentConfig):
        total_steps: int | None = Field(
            None, gt=0, description="steps of the ramp's time base; None = the stage's step count "
                                    "passed to alpha() at call time")

    def __init__(self, config: Config, **runtime):
        self.config = config

    def resolve_total(self, total_steps: int | None) -> int:
        """The time base: ``config.total_steps`` if set, else ``total_steps`` (must be >= 1)."""
        total = self.config.total_steps if self.config.total_steps is not None else total_steps
        if total is None or int(total) < 1:
            raise ConanError(f"{type(self).__name__}: total_steps must be a positive step count, got "
                             f"{total!r}; pass the stage's step count to alpha(step, total_steps) or "
                             "set the schedule's total_steps field")
        return int(total)

    @abstractmethod
    def alpha(self, step: int, total_steps: int | None = None) -> float:
        """alpha in [0, 1] at 0-based ``step`` of ``total_steps``."""


class RampSchedule(MaskSchedule):
    """A ramp from ``start`` to ``end``: held at ``start`` for ``warmup_steps``, then
    ``start + (end - start) * shape(x)`` with progress ``x`` going 0 -> 1 over the ramp window, then
    held at ``end`` for the last ``max(hold_steps, round(hold_fraction * T))`` steps. With the
    defaults the window is the whole stage, so ``x = t / T`` (RECIPE §3's ``t / tau``)."""

    class Config(MaskSchedule.Config):
        warmup_steps: int = Field(0, ge=0, description="steps held at `start` before the ramp begins")
        hold_steps: int = Field(0, ge=0, description="steps held at `end` after the ramp (alpha "
                                                     "reaches `end` this many steps before the stage ends)")
        hold_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="same as hold_steps, as a fraction "
                                                                     "of the total (the larger wins)")
        start: float = Field(0.0, ge=0.0, le=1.0, description="alpha before and at the start of the ramp")
        end: float = Field(1.0, ge=0.0, le=1.0, description="alpha at and after the end of the ramp")

    @abstractmethod
    def shape(self, x: float) -> float:
        """The curve: progress ``x`` in [0, 1] -> fraction of the way from start to end, with
        ``shape(0) = 0`` and ``shape(1) = 1``."""

    def window(self, total_steps: int | None = None) -> tuple[int, int]:
        """``(first, last)`` step of the ramp: alpha = start at ``t <= first``, end at ``t >= last``."""
        total = self.resolve_total(total_steps)
        hold = max(self.config.hold_steps, int(round(self.config.hold_fraction * total)))
        return self.config.warmup_steps, total - hold

    def alpha(self, step: int, total_steps: int | None = None) -> float:
        first, last = self.window(total_steps)
        cfg = self.config
        if step <= first:
            value = cfg.start
        elif step >= last:
            value = cfg.end
        else:
            x = (step - first) / (last - first)
            value = cfg.start + (cfg.end - cfg.start) * self.shape(x)
        # clamp: floating error in shape() must never leave [0, 1] (alpha=1 has to stay exactly 1)
        return min(max(float(value), 0.0), 1.0)
