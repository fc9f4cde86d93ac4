"""``Map`` and :class:`ResumableLoader`: a DataLoader whose position is saved and restored exactly.

:class:`ResumableLoader` wraps a torch DataLoader over any :class:`~conan_core.data.resumable.Resumable`
and makes it resumable with ``num_workers`` 0 or more: each worker sends a full snapshot of its copy
every ``snapshot_every`` items, the loader records per worker the last snapshot it handed out and
how many items followed it, and it emits items in a fixed worker rotation of its own. Resuming
restores each worker from its snapshot and re-skips the few items after it (deterministic replay),
then continues the rotation where it stopped.
"""

from __future__ import annotations

import copy
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset

from conan_core.data.resumable import Resumable, inner_state, load_inner_state, worker_split
from conan_core.data.samples import DataError

# ----------------------------------------------------------------------------- map

class Map(Resumable):
    """Applies ``fn`` to every item of ``inner`` (tokenise, collate ...). ``fn`` must be
    deterministic and picklable (it runs in DataLoader workers); the state is ``inner``'s."""

    def __init__(self, inner: Iterable, fn: Callable[[Any], Any]):
        self.inner = inner
        self.fn = fn

    def __iter__(self) -> Iterator:
        for item in self.inner:
            yield self.fn(item)

    def state_dict(self) -> dict:
        return {"inner": inner_state(self.inner, "Map")}

    def load_state_dict(self, state: dict) -> None:
        load_inner_state(self.inner, state["inner"], "Map")

    def counters(self) -> dict[str, int]:
        return self.inner.counters() if hasattr(self.inner, "counters") else {}


# ----------------------------------------------------------------------------- loader

@dataclass
class _Tagged:
    worker: int
    item: Any
    snapshot: dict | None
    counters: dict[str, int]
    end: bool = False


class _WorkerStream(IterableDataset):
    """What each DataLoader worker iterates: the stage from its start point, items tagged."""

    def __init__(self, stage: Resumable, starts: list[dict] | None, every: int):
        self.stage = stage
        self.starts = starts
        self.every = every

    def __iter__(self) -> Iterator[_Tagged]:
        worker, _ = worker_split()
        stage = self.stage
        start = self.starts[worker] if self.starts else {"snapshot": None, "skip": 0}
        if start["snapshot"] is not None:
            stage.load_state_dict(start["snapshot"])
        items = iter(stage)
        count = 0
        for _ in range(start["skip"]):
            if next(items, _END) is _END:
                break
            count += 1
        for item in items:
            count += 1
            snap = stage.state_dict() if count % self.every == 0 else None
            yield _Tagged(worker, item, snap, stage.counters())
        yield _Tagged(worker, None, stage.state_dict(), stage.counters(), end=True)


_END = object()


def _identity(x: Any) -> Any:
    return x


def _sum_counters(parts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in parts:
        for k, v in part.items():
            total[k] = total.get(k, 0) + v
    return total


class ResumableLoader:
    """A DataLoader over a stage whose position can be saved and restored exactly.

    Args:
        stage: a Source or a resumable iterable built on sources (Map, TaskBatcher,
            PackedLMBatches). It is copied into each worker, which reads its own piece.
        num_workers: DataLoader workers; 0 iterates in this process.
        snapshot_every: a worker sends its stage's full state every this many items; a resume
            replays at most this many items per worker.
        seed: seeds the DataLoader's generator (worker torch seeds are then reproducible).
        prefetch_factor, timeout, multiprocessing_context: passed to DataLoader.

    Items come out in a fixed rotation over workers (0, 1, ..., skipping finished ones), so the
    sequence depends only on the data, not on worker timing. ``state_dict()`` between two items
    and ``load_state_dict()`` on a new loader over an equal stage continue the exact sequence.
    After a finite stage ends in every worker, the next ``iter()`` continues with its next epoch.
    """

    def __init__(self, stage: Resumable, *, num_workers: int = 0, snapshot_every: int = 64, seed: int = 0,
                 prefetch_factor: int = 2, timeout: float = 0,
                 multiprocessing_context: str | None = None):
        if num_workers < 0 or snapshot_every < 1:
            raise DataError(f"ResumableLoader: need num_workers >= 0 and snapshot_every >= 1, got "
                            f"{num_workers}, {snapshot_every}", reason="bad_arg")
        self.stage = stage
        self.num_workers = int(num_workers)
        self.snapshot_every = int(snapshot_every)
        self.seed = seed
        self.prefetch_factor = prefetch_factor
        self.timeout = timeout
        self.multiprocessing_context = multiprocessing_context
        n = max(1, self.num_workers)
        self._workers: list[dict] = [{"snapshot": None, "skip": 0} for _ in range(n)]
        self._ended = [False] * n
        self._next = 0
        self._counters: list[dict[str, int]] = [{} for _ in range(n)]

    # -- iteration
    def __iter__(self) -> Iterator[Any]:
        if self.num_workers == 0:
            yield from self._iter_inline()
        else:
            yield from self._iter_workers()

    def _iter_inline(self) -> Iterator[Any]:
        yield from self.stage

    def _iter_workers(self) -> Iterator[Any]:
        n = self.num_workers
        if all(self._ended):
            self._ended = [False] * n
            self._next = 0
        loader = DataLoader(_WorkerStream(self.stage, copy.deepcopy(self._workers), self.snapshot_every),
                            batch_size=None, num_workers=n, collate_fn=_identity,
                            prefetch_factor=self.prefetch_factor, timeout=self.timeout,
                            generator=torch.Generator().manual_seed(self.seed),
                            multiprocessing_context=self.multiprocessing_context)
        stream = iter(loader)
        try:
            yield from self._rotate(stream)
        finally:
            # Shut the workers down now: a worker exception's traceback keeps the iterator in a
            # reference cycle, and when the garbage collector ends it later the queues may be
            # finalised first, so each worker join waits for its 5 s timeout.
            shutdown = getattr(stream, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()

    def _rotate(self, stream: Iterator[_Tagged]) -> Iterator[Any]:
        """Emit the workers' items in the loader's own fixed rotation, tracking their positions."""
        queues: list[deque[_Tagged]] = [deque() for _ in range(self.num_workers)]
        while not all(self._ended):
            w = self._next
            while not queues[w]:
                try:
                    tagged = next(stream)
                except StopIteration:
                    raise DataError(f"ResumableLoader: worker {w} stopped without its end marker",
                                    reason="worker_lost") from None
                queues[tagged.worker].append(tagged)
            tagged = queues[w].popleft()
            self._counters[w] = tagged.counters
            self._next = self._following(w)
            if tagged.end:
                self._ended[w] = True
                self._workers[w] = {"snapshot": tagged.snapshot, "skip": 0}
                continue
            if tagged.snapshot is not None:
                self._workers[w] = {"snapshot": tagged.snapshot, "skip": 0}
            else:
                self._workers[w]["skip"] += 1
            yield tagged.item

    def _following(self, w: int) -> int:
        """The next unfinished worker after ``w`` in the rotation (``w`` itself if none)."""
        n = self.num_workers
        for step in range(1, n + 1):
            if not self._ended[(w + step) % n]:
                return (w + step) % n
        return w

    # -- state
    def state_dict(self) -> dict:
        """Per-worker (snapshot, items since), the rotation pointer and finished workers."""
        if self.num_workers == 0:
            workers = [{"snapshot": self.stage.state_dict(), "skip": 0}]
        else:
            workers = copy.deepcopy(self._workers)
        return {"num_workers": self.num_workers, "workers": workers, "next": self._next,
                "ended": list(self._ended), "counters": copy.deepcopy(self._counters)}

    def load_state_dict(self, state: dict) -> None:
        """Restore a position; DataError if ``num_workers`` differs or the stage rejects a state."""
        if state.get("num_workers") != self.num_workers:
            raise DataError(f"ResumableLoader: cannot resume: num_workers: checkpoint "
                            f"{state.get('num_workers')!r}, now {self.num_workers!r} (the split of the "
                            "data depends on it); resume with the same num_workers",
                            reason="data_changed")
        workers = copy.deepcopy(state["workers"])
        for entry in workers:
            if entry["snapshot"] is not None and self.num_workers > 0:
                # validate in this process so a mismatch fails here, not inside a worker
                copy.deepcopy(self.stage).load_state_dict(entry["snapshot"])
        self._workers = workers
        self._next = int(state["next"])
        self._ended = list(state["ended"])
        self._counters = copy.deepcopy(state.get("counters") or [{} for _ in workers])
        if self.num_workers == 0:
            self.stage.load_state_dict(workers[0]["snapshot"])

    def counters(self) -> dict[str, int]:
        """Counters summed over workers, as of the last item handed out."""
        if self.num_workers == 0:
            return self.stage.counters() if hasattr(self.stage, "counters") else {}
        return _sum_counters(self._counters)
