"""``jsonl``: ``<stage>/metrics.jsonl``, the record the report, the plots and the tests read."""

from __future__ import annotations

import json
import math
from typing import Any

from conan_core.trackers.base import Tracker, runtime_log_dir


class JSONLTracker(Tracker):
    """One JSON object per step, ``{"step": N, **scalars}``, appended and flushed at once so
    a killed process leaves whole lines. NaN and infinities are written as the strings ``"nan"``,
    ``"inf"``, ``"-inf"`` (JSON has no literal for them).

    Every stage writes it whatever ``report_to`` says: the report, the plots and resume rely on it.
    A resumed stage finds the file already cut back to its checkpoint's step by the trainer, so
    appending continues it exactly.
    """

    FILE = "metrics.jsonl"

    def __init__(self, config: Tracker.Config, **runtime: Any):
        super().__init__(config)
        self.path = runtime_log_dir(runtime) / self.FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")

    def log(self, step: int, scalars: dict[str, float]) -> None:
        record = {"step": int(step), **{k: _plain(v) for k, v in scalars.items()}}
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
