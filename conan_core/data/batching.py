"""Task-homogeneous batching: every batch holds samples of one task, resumable."""

from __future__ import annotations

import copy
from typing import Any, Iterable, Iterator, Mapping

from conan_core.data.resumable import Resumable, inner_state, load_inner_state
from conan_core.data.samples import DataError


class TaskBatcher(Resumable):
    """Groups samples into lists of ``batch_size`` samples that share ``sample[key]``.

    One buffer per task; a buffer that reaches its size is emitted as a batch (so batches come
    out in the order they fill). ``batch_size`` is an int or a mapping task -> size, where the
    entry ``"*"`` is the size of unlisted tasks (e.g. ``{"sts": 32, "*": 4}``, the paper's sizes).
    ``key=None`` makes plain batches of consecutive samples. A sample without ``key`` takes
    ``default`` if given, else raises DataError naming its ``__key__`` and ``__url__``. When the
    input ends, the partly filled buffers are emitted in the order their tasks first appeared
    (``drop_last=False``) or dropped and counted as ``dropped_samples``.

    The state holds the buffers, whether the end-of-input flush is under way, and the input's
    state (the input must be resumable for ``state_dict()``).
    """

    def __init__(self, samples: Iterable[dict], batch_size: int | Mapping[str, int], key: str | None = "task",
                 *, drop_last: bool = False, default: str | None = None):
        sizes = dict(batch_size) if isinstance(batch_size, Mapping) else {"*": batch_size}
        bad = {k: v for k, v in sizes.items() if not isinstance(v, int) or v < 1}
        if bad or not sizes:
            raise DataError(f"TaskBatcher: batch sizes must be positive integers, got {batch_size!r}",
                            reason="bad_arg")
        self.inner = samples
        self.sizes = sizes
        self.key = key
        self.drop_last = drop_last
        self.default = default
        self._buffers: dict[str, list] = {}
        self._flushing = False
        self._dropped = 0

    def size_of(self, task: str) -> int:
        """Batch size of ``task``."""
        if task in self.sizes:
            return self.sizes[task]
        if "*" in self.sizes:
            return self.sizes["*"]
        raise DataError(f"TaskBatcher: no batch size for task {task!r}; sizes given for "
                        f"{sorted(self.sizes)}; add it or a '*' entry", reason="bad_arg")

    def _task(self, sample: Any) -> str:
        if self.key is None:
            return "*"
        if isinstance(sample, Mapping) and self.key in sample:
            return str(sample[self.key])
        if self.default is not None:
            return self.default
        where = (f"sample {sample.get('__key__')!r} of {sample.get('__url__')}"
                 if isinstance(sample, Mapping) else f"item {type(sample).__name__}")
        raise DataError(f"TaskBatcher: {where} has no {self.key!r} field; set default= or add the field",
                        reason="missing_key")

    def __iter__(self) -> Iterator[list]:
        if not self._flushing:
            for sample in self.inner:
                task = self._task(sample)
                buffer = self._buffers.setdefault(task, [])
                buffer.append(sample)
                if len(buffer) >= self.size_of(task):
                    self._buffers[task] = []
                    yield buffer
            self._flushing = True
        for task in list(self._buffers):
            batch = self._buffers.pop(task)
            if not batch:
                continue
            if self.drop_last:
                self._dropped += len(batch)
                continue
            yield batch
        self._flushing = False

    def state_dict(self) -> dict:
        return {"buffers": [[t, copy.deepcopy(b)] for t, b in self._buffers.items()],
                "flushing": self._flushing, "dropped": self._dropped,
                "inner": inner_state(self.inner, "TaskBatcher")}

    def load_state_dict(self, state: dict) -> None:
        load_inner_state(self.inner, state["inner"], "TaskBatcher")
        self._buffers = {t: copy.deepcopy(b) for t, b in state["buffers"]}
        self._flushing = bool(state["flushing"])
        self._dropped = int(state["dropped"])

    def counters(self) -> dict[str, int]:
        inner = self.inner.counters() if hasattr(self.inner, "counters") else {}
        return {**inner, "dropped_samples": self._dropped}


def task_batches(samples_iter: Iterable[dict], batch_size: int | Mapping[str, int], key: str | None = "task",
                 *, drop_last: bool = False, default: str | None = None) -> TaskBatcher:
    """Task-homogeneous batches of ``samples_iter`` (see :class:`TaskBatcher`)."""
    return TaskBatcher(samples_iter, batch_size, key, drop_last=drop_last, default=default)
