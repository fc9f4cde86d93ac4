"""Weighted interleaving of several sources, resumable."""

from __future__ import annotations

import copy
import random
from typing import Any, Iterator, Literal, Sequence

from conan_core.data.samples import DataError
from conan_core.sources.base import Stage
from conan_core.sources.reader import derive_seed, load_stage_state, rng_state, set_rng_state, stage_state, worker_split


class MixedSource(Stage):
    """Interleaves ``sources`` at random, source ``i`` chosen with probability
    ``weights[i] / sum(weights)`` at each item.

    The choices come from a ``random.Random`` seeded from (seed, rank, worker), so a run is
    reproducible, and each DataLoader worker mixes its own pieces of the sources. A finite source
    that ends is dropped and the others' weights renormalised (``stop="all"``, default), or the
    mix ends at once (``stop="first"``); the next ``iter()`` starts every source's next pass.
    The state holds the RNG, which sources ended, and every source's own state, so a restored
    mix continues exactly. ``counters()`` sums the sources' counters and adds ``from_source_i``
    (items taken from source ``i``).
    """

    def __init__(self, sources: Sequence[Any], weights: Sequence[float], seed: int = 0, *,
                 rank: int = 0, stop: Literal["all", "first"] = "all"):
        if len(sources) == 0 or len(sources) != len(weights):
            raise DataError(f"MixedSource: need one weight per source, got {len(sources)} sources and "
                            f"{len(weights)} weights", reason="bad_arg")
        if any(not (w >= 0) for w in weights) or sum(weights) <= 0:
            raise DataError(f"MixedSource: weights must be >= 0 with a positive sum, got {list(weights)}",
                            reason="bad_arg")
        if stop not in ("all", "first"):
            raise DataError(f"MixedSource: stop must be 'all' or 'first', got {stop!r}", reason="bad_arg")
        self.sources = list(sources)
        self.weights = [float(w) for w in weights]
        self.seed, self.rank, self.stop = int(seed), int(rank), stop
        self._rng = random.Random(0)
        self._st: dict[str, Any] | None = None
        self._bound = False  # whether the state belongs to the current worker

    def _fresh(self, worker: int, num_workers: int) -> dict[str, Any]:
        self._rng.seed(derive_seed(self.seed, "mix", self.rank, worker))
        return {"worker": worker, "num_workers": num_workers, "weights": self.weights,
                "ended": [False] * len(self.sources), "taken": [0] * len(self.sources)}

    def __iter__(self) -> Iterator[Any]:
        worker, num_workers = worker_split()
        if self._st is None or not self._bound:  # a state made before iteration binds no worker yet
            self._st = self._fresh(worker, num_workers)
            self._bound = True
        st = self._st
        if (st["worker"], st["num_workers"], st["weights"]) != (worker, num_workers, self.weights):
            raise DataError(f"MixedSource: cannot resume: state of worker {st['worker']} of "
                            f"{st['num_workers']} with weights {st['weights']}, now worker {worker} of "
                            f"{num_workers} with weights {self.weights}", reason="data_changed")
        iters: list[Iterator | None] = [None] * len(self.sources)
        while True:
            active = [i for i, w in enumerate(self.weights) if w > 0 and not st["ended"][i]]
            if not active:
                break
            r = self._rng.random() * sum(self.weights[i] for i in active)
            choice = active[-1]
            for i in active:
                r -= self.weights[i]
                if r < 0:
                    choice = i
                    break
            if iters[choice] is None:
                iters[choice] = iter(self.sources[choice])
            item = next(iters[choice], _END)
            if item is _END:
                st["ended"][choice] = True
                if self.stop == "first":
                    break
                continue
            st["taken"][choice] += 1
            yield item
        st["ended"] = [False] * len(self.sources)

    def state_dict(self) -> dict:
        if self._st is None:
            self._st = self._fresh(*worker_split())
            self._bound = False
        return {"mix": copy.deepcopy(self._st), "rng": rng_state(self._rng),
                "sources": [stage_state(s, "MixedSource") for s in self.sources]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["sources"]) != len(self.sources):
            raise DataError(f"MixedSource: cannot resume: checkpoint has {len(state['sources'])} "
                            f"sources, now {len(self.sources)}", reason="data_changed")
        for source, sub in zip(self.sources, state["sources"]):
            load_stage_state(source, sub, "MixedSource")
        self._st = copy.deepcopy(state["mix"])
        self._bound = True
        set_rng_state(self._rng, state["rng"])

    def counters(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for source in self.sources:
            for k, v in (source.counters() if hasattr(source, "counters") else {}).items():
                total[k] = total.get(k, 0) + v
        taken = self._st["taken"] if self._st is not None else [0] * len(self.sources)
        for i, n in enumerate(taken):
            total[f"from_source_{i}"] = n
        return total


_END = object()
