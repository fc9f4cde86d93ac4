"""``dynamic_v1``: Conan-embedding (v1) periodic re-mining of whole negative sets (RECIPE §4 option)."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from pydantic import Field

from conan_core.miners.base import as_example_ids
from conan_core.miners.pool import CandidatePool
from conan_core.miners.pooled import MinerError, PoolMiner, PoolMinerConfig, window


def v1_should_remine(s_init: torch.Tensor, s_cur: torch.Tensor, *, decay_ratio: float = 1.15,
                     max_abs_score: float = 0.8) -> torch.Tensor:
    """RECIPE §4 v1 rule, elementwise: re-mine when ``decay_ratio * S_cur < S_init`` and
    ``|S_cur| < max_abs_score``. Float32 with float32-rounded thresholds (strict inequalities, a
    value equal to a threshold as written does not trigger). Returns bool, same shape."""
    s_init = s_init.to(torch.float32)
    s_cur = s_cur.to(torch.float32)
    dr = torch.tensor(decay_ratio, dtype=torch.float32)
    mx = torch.tensor(max_abs_score, dtype=torch.float32)
    return (dr * s_cur < s_init) & (s_cur.abs() < mx) & torch.isfinite(s_cur) & torch.isfinite(s_init)


def row_means(scores: torch.Tensor) -> list[float | None]:
    """Per-row mean of the finite entries of a float32 [B, n] tensor, accumulated in float64 and
    rounded to float32 (so n equal scores have exactly that score as mean); None if none finite."""
    finite = torch.isfinite(scores)
    s64 = torch.where(finite, scores.to(torch.float64), torch.zeros((), dtype=torch.float64))
    counts = finite.sum(dim=1)
    means = (s64.sum(dim=1) / counts.clamp(min=1)).to(torch.float32).tolist()
    return [m if c else None for m, c in zip(means, counts.tolist())]


RemineFn = Callable[[list], Any]


class DynamicV1Miner(PoolMiner):
    """Whole-set re-mining every ``interval`` steps.

    Per example: ``S_init`` = mean score of its negatives the first time they are observed,
    ``S_cur`` = mean at its latest observation. Every ``interval`` optimizer steps (``interval ×
    micro_batches`` ``observe`` calls: the 100th, 200th … step), every example seen so far is checked
    with :func:`v1_should_remine` after this call's scores are recorded; a re-mined example gets a
    new set from the next ``negatives_for`` on, and its ``S_init`` restarts.

    Windows: the k-th mining of an example (k = 1 is the initial set) takes eligible positions
    ``(k-1)·n .. k·n - 1`` — with nothing filtered, pool ranks ``(k-1)·n + rank_start + 1 ..
    k·n + rank_start`` (1-based), i.e. the paper's "(k−1)·n+10 .. k·n+10" with ranks 1–10 never used.
    A window past the end of the eligible list wraps around cyclically (counted in ``exhausted``).

    Runtime ``remine_fn(example_ids: list[str]) -> CandidatePool | mapping``: each re-mining asks it
    for candidates ranked with the *current* model — the paper's reading (RECIPE §4): re-encode the
    query and search again — and takes the window from that fresh ranking (its positive scores, if
    given, feed the optional score filters). The supervised stage always passes one
    (:mod:`conan_core.train.remine`). Without it the offline pool's ranking is used, a cheap
    approximation that only walks deeper into the offline pool.

    ``observe`` returns True for every column of the rows whose example was re-mined at this call.
    """

    remines = True

    class Config(PoolMinerConfig):
        """Thresholds of RECIPE §4 (v1 rule) plus the shared pool fields."""

        interval: int = Field(100, ge=1, description="check every this many optimizer steps")
        decay_ratio: float = Field(1.15, gt=0, description="re-mine when decay_ratio·S_cur < S_init ...")
        max_abs_score: float = Field(0.8, gt=0, le=1, description="... and |S_cur| < this")

    def __init__(self, config: Config, *, pool: Any = None, remine_fn: RemineFn | None = None, **runtime: Any):
        super().__init__(config, pool=pool, **runtime)
        self.remine_fn = remine_fn
        self._calls = 0

    def _entry(self, eid: str) -> dict[str, Any]:
        st = self._examples.get(eid)
        if st is None:
            st = {"k": 1, "active": self._window(eid, 1), "s_init": None, "s_cur": None}
            self._examples[eid] = st
        return st

    def _window(self, eid: str, k: int) -> list[int]:
        n = self.num_negatives
        positions, wrapped = window((k - 1) * n, n, len(self.eligible(eid)))
        if wrapped and k > 1:  # a short pool's first window is counted in short_pools instead
            self._count("exhausted")
        return positions

    def _active(self, example_id: str) -> list[int]:
        return self._entry(example_id)["active"]

    def observe(self, example_ids: Sequence[str], neg_scores: torch.Tensor) -> torch.Tensor:
        """Record this step's means; on every ``interval``-th call re-mine the examples whose
        negatives are no longer hard. Returns bool [B, n] on ``neg_scores.device``."""
        ids = as_example_ids(example_ids)
        scores = self._check_scores(ids, neg_scores)
        self._record(scores)
        self._calls += 1
        for eid, mean in zip(ids, row_means(scores)):
            st = self._entry(eid)
            if mean is None:
                continue
            st["s_cur"] = mean
            if st["s_init"] is None:
                st["s_init"] = mean
        mask = torch.zeros(scores.shape, dtype=torch.bool)
        if self._calls % (self.config.interval * self.micro_batches) == 0:
            due = self._due()
            if due:
                self._remine(due)
                hit = set(due)
                rows = [b for b, eid in enumerate(ids) if eid in hit]
                mask[rows] = True
        return mask.to(neg_scores.device)

    def _due(self) -> list[str]:
        tracked = [(eid, st) for eid, st in self._examples.items() if st["s_init"] is not None]
        if not tracked:
            return []
        s_init = torch.tensor([st["s_init"] for _, st in tracked], dtype=torch.float32)
        s_cur = torch.tensor([st["s_cur"] for _, st in tracked], dtype=torch.float32)
        cfg = self.config
        flags = v1_should_remine(s_init, s_cur, decay_ratio=cfg.decay_ratio, max_abs_score=cfg.max_abs_score)
        return [eid for (eid, _), f in zip(tracked, flags.tolist()) if f]

    def _remine(self, due: list[str]) -> None:
        if self.remine_fn is not None:
            fresh = CandidatePool.coerce(self.remine_fn(list(due)))
            missing = [eid for eid in due if eid not in fresh]
            if missing:
                raise MinerError(f"remine_fn returned no candidates for {len(missing)} example(s), e.g. "
                                 f"{missing[:3]}; it must return a pool covering every id it is given")
            for eid in due:
                self._set_override(eid, fresh)
        for eid in due:
            st = self._examples[eid]
            st["k"] += 1
            st["active"] = self._window(eid, st["k"])
            st["s_init"] = None
            st["s_cur"] = None
        self._count("remined_examples", len(due))
        self._count("replaced", len(due) * self.num_negatives)

    def _layout(self) -> dict[str, Any]:
        return {**super()._layout(), "interval": self.config.interval}

    def _extra_state(self) -> dict[str, Any]:
        return {"calls": self._calls}

    def _load_extra_state(self, extra: Mapping[str, Any]) -> None:
        self._calls = int(extra["calls"])
