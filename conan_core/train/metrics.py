"""Step logs: ``steps.jsonl`` (exact, for resume checks) and the scalars every tracker receives.

``steps.jsonl`` has one line per optimizer step: ``{"step", "loss" (float.hex of the mean loss),
"grad_norm" (float.hex), "skipped" (bool), "consumed": [[url, key], ...]}``. It holds no timings, so
an interrupted-and-resumed run writes the same bytes as an uninterrupted one. On several ranks, rank
R > 0 writes ``steps.rank-R.jsonl`` with its own consumed keys.

``metrics.jsonl`` (:class:`conan_core.trackers.jsonl.JSONLTracker`) has one JSON object per step
(``step, loss, lr, alpha, grad_norm``, the objective's metrics; ``tokens_per_s`` and the windowed
counters every ``log_every`` steps; ``eval/...`` after an evaluation); :class:`MetricsLog` hands the
same scalars to every tracker of ``report_to``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


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
    """The stage's trackers behind one ``write(step, scalars)``: ``metrics.jsonl`` always, then the
    ``report_to`` ones (:mod:`conan_core.trackers`) in their order.

    ``trackers`` None means ``metrics.jsonl`` alone (written at ``path``); given trackers must
    include a ``jsonl`` one (:func:`conan_core.builder.build_tracker_plan` puts it first).
    """

    def __init__(self, path: Path, trackers: list | None = None):
        if trackers is None:
            from conan_core.registries import REGISTRIES

            trackers = [REGISTRIES["trackers"].build("jsonl", "report_to", log_dir=Path(path).parent,
                                                     run_dir=Path(path).parent, run_name="", stage="",
                                                     run_config={}, start_step=0)]
        self.trackers = list(trackers)

    def write(self, step: int, scalars: dict[str, Any]) -> None:
        """One step's scalars (ints and floats; booleans and other values are not scalars and are
        dropped) to every tracker."""
        clean = {k: v for k, v in scalars.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for tracker in self.trackers:
            tracker.log(int(step), clean)

    def close(self) -> None:
        """Close every tracker, even when one fails (the first failure is raised afterwards)."""
        error = None
        for tracker in self.trackers:
            try:
                tracker.close()
            except Exception as exc:  # one tracker's failure must not leave the others open
                if error is None:
                    error = exc
        if error is not None:
            raise error
