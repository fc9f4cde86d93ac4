"""Learning-rate schedule: linear warm-up then cosine / linear / constant decay.

Steps are 0-based optimizer-step indices ``i`` in ``[0, total)``; the factor multiplies each group's
peak learning rate. With ``W = round(warmup_ratio * total)`` warm-up steps:

* ``i < W``:  ``(i + 1) / W``  (reaches exactly 1.0 on the last warm-up step);
* ``i >= W``: progress ``p = (i - W) / (total - W)`` in ``[0, 1)`` and
  cosine ``0.5 * (1 + cos(pi * p))``, linear ``1 - p``, constant ``1``.

No step ever gets a zero learning rate, so every scheduled step changes the weights.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

Decay = Literal["cosine", "linear", "constant"]


def warmup_steps(total: int, warmup_ratio: float) -> int:
    """Number of warm-up steps: ``round(warmup_ratio * total)``, at most ``total``."""
    return min(total, int(round(warmup_ratio * total)))


def lr_factor(i: int, total: int, warmup_ratio: float, decay: Decay) -> float:
    """The multiplier in (0, 1] of the peak learning rate at 0-based step ``i`` (see module doc)."""
    if total <= 0:
        raise ValueError(f"total steps must be positive, got {total}")
    w = warmup_steps(total, warmup_ratio)
    if i < w:
        return (i + 1) / w
    p = (i - w) / max(1, total - w)
    if decay == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    if decay == "linear":
        return 1.0 - p
    if decay == "constant":
        return 1.0
    raise ValueError(f"unknown lr decay {decay!r}; valid: cosine, linear, constant")


class WarmupDecay:
    """Sets ``group["lr"] = peak * lr_factor(i, ...)`` on an optimizer before each step.

    ``apply(i)`` is called with the 0-based index of the step about to be taken; ``state_dict`` holds
    the peak learning rates so a resumed run does not depend on the optimizer's last written lr.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total: int, warmup_ratio: float, decay: Decay):
        self.optimizer = optimizer
        self.total = int(total)
        self.warmup_ratio = float(warmup_ratio)
        self.decay = decay
        self.peaks = [float(g["lr"]) for g in optimizer.param_groups]
        self.last_index = -1

    def apply(self, i: int) -> float:
        """Set the learning rates for 0-based step ``i``; returns the factor."""
        factor = lr_factor(i, self.total, self.warmup_ratio, self.decay)
        for group, peak in zip(self.optimizer.param_groups, self.peaks):
            group["lr"] = peak * factor
        self.last_index = i
        return factor

    def current_lr(self) -> float:
        """The learning rate of the first group (what the progress bar shows)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        return {"total": self.total, "warmup_ratio": self.warmup_ratio, "decay": self.decay,
                "peaks": list(self.peaks), "last_index": self.last_index}

    def load_state_dict(self, state: dict) -> None:
        self.peaks = [float(p) for p in state["peaks"]]
        self.last_index = int(state["last_index"])
