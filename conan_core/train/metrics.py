"""Step logs: ``steps.jsonl`` (exact, for resume checks), ``metrics.jsonl`` (+ TensorBoard if installed).

``steps.jsonl`` has one line per optimizer step: ``{"step", "loss" (float.hex of the mean loss),
"grad_norm" (float.hex), "skipped" (bool), "consumed": [[url, key], ...]}``. It holds no timings, so
an interrupted-and-resumed run writes the same bytes as an uninterrupted one. On several ranks, rank
R > 0 writes ``steps.rank-R.jsonl`` with its own consumed keys.

``metrics.jsonl`` has one JSON object per logged step (``step, loss, lr, alpha, tokens_per_s, ...``).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger("conan_core.train")


def truncate_jsonl(path: Path, last_step: int) -> None:
    """Keep only the lines of ``path`` whose ``step`` is <= ``last_step`` (resume rewinds logs).

    A torn last line (the process died mid-write) is dropped too.
    """
    path = Path(path)
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if not line.endswith("\n"):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if int(record.get("step", 0)) <= last_step:
            kept.append(line)
    from conan_core.fsio import atomic_write_text

    atomic_write_text(path, "".join(kept))


def _hex(value: float) -> str:
    return float(value).hex()


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/Inf literal
    return value


class StepLog:
    """Appends one exact line per step; flushed each time so a killed process leaves whole lines."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")

    def write(self, step: int, loss: float, grad_norm: float, skipped: bool,
              consumed: list[tuple[str, str]]) -> None:
        record = {"step": int(step), "loss": _hex(loss), "grad_norm": _hex(grad_norm), "skipped": bool(skipped),
                  "consumed": [[str(u), str(k)] for u, k in consumed]}
        self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


class MetricsLog:
    """``metrics.jsonl`` lines, mirrored to TensorBoard (``<dir>/tb``) when ``tensorboard`` is installed."""

    def __init__(self, path: Path, tensorboard: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # optional dependency: JSONL is the record of truth
                log.debug("tensorboard not installed; metrics go to %s only", self.path)
            else:
                self._tb = SummaryWriter(str(self.path.parent / "tb"))

    def write(self, record: dict) -> None:
        clean = {k: _plain(v) for k, v in record.items()}
        self._fh.write(json.dumps(clean, sort_keys=False) + "\n")
        self._fh.flush()
        if self._tb is not None:
            step = int(record.get("step", 0))
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        self._fh.close()
        if self._tb is not None:
            self._tb.close()
