"""Shared bookkeeping of the pool-based miners (``static``, ``dynamic_v2``, ``dynamic_v1``).

Eligible candidates. For each example the miner derives, once and lazily, its *eligible list*
from the pool's ranked candidates:

1. the first ``rank_start`` candidates (1-based ranks ``1..rank_start``) are never used: RECIPE §4
   v1 ("ranks 1–10 are never used, which guards against false negatives"); rank ``rank_start + 1``
   is the first one that can be used;
2. a candidate whose normalised text (:func:`~conan_core.miners.pool.normalize_text`: NFKC, case,
   whitespace) equals one of the example's positives is dropped and counted in
   ``excluded_false_negatives`` (always on);
3. optional score filters, off by default (the paper's only false-negative guard is step 1): a
   candidate scoring above ``relative_margin × positive score`` (TopK-PercPos; the weakest positive
   when there are several) or above ``absolute_max`` is dropped and counted in
   ``excluded_by_margin`` (unknown scores are never dropped by these two);
4. with ``selection="shuffled"`` the remaining list is permuted by a per-example RNG seeded from
   ``(seed, example_id)``, so the order does not depend on the order examples are seen.

Negatives are then taken by position in the eligible list. With no candidate filtered, position
``p`` (0-based) is rank ``rank_start + 1 + p``, so windows of the eligible list are exactly the
paper's rank windows.

Exhaustion policy. Every miner returns exactly ``num_negatives`` negatives per example. When the
score filters leave fewer than ``num_negatives`` candidates, the candidates they dropped fill the
list up, in rank order (the hardest first, never "least similar first", which would turn hard
negatives into easy ones), and the example is counted in ``margin_fallback``. An example with
still fewer eligible candidates repeats them cyclically (counted once per example in
``short_pools``); a miner that runs past the end of an eligible list wraps around (each wrap
counted in ``exhausted``; see each miner for what it reuses). An example with no candidate beyond
``rank_start`` (or only positive-equal ones), or missing from the pool, raises :class:`MinerError`.

Counters that depend on the pool (``excluded_*``, ``short_pools``) cover the examples seen so far.
"""

from __future__ import annotations

import hashlib
import math
import random
from abc import abstractmethod
from collections import deque
from typing import Any, Literal, Mapping, Sequence

import torch
from pydantic import Field

from conan_core.errors import ConanError
from conan_core.miners.base import Miner, as_example_ids
from conan_core.miners.pool import Candidate, CandidatePool, normalize_text
from conan_core.registry import ComponentConfig

HIST_BINS = 40
HIST_RANGE = (-1.0, 1.0)
STATE_VERSION = 1

_COUNTERS = ("observe_calls", "observed", "nonfinite", "replaced", "exhausted", "remined_examples")


class MinerError(ConanError, ValueError):
    """The pool does not cover what the miner is asked for, or a state does not fit this miner."""


class PoolMinerConfig(ComponentConfig):
    """Fields shared by the pool-based miners (see the module docstring for their meaning)."""

    rank_start: int = Field(10, ge=0, description="candidates with 1-based rank <= rank_start are never "
                            "used (RECIPE §4: ranks 1–10 never used)")
    relative_margin: float | None = Field(None, gt=0, description="drop candidates scoring above this × "
                                          "the positive's score (TopK-PercPos, not in the paper); null "
                                          "(default) disables")
    absolute_max: float | None = Field(None, ge=-1, le=1, description="drop candidates scoring above this "
                                       "cosine; null disables")
    selection: Literal["ranked", "shuffled"] = Field("ranked", description="order of the eligible list: "
                                                     "pool rank, or a per-example shuffle seeded by the "
                                                     "run's seed")


def window(start: int, n: int, length: int) -> tuple[list[int], bool]:
    """Positions ``start .. start+n-1`` of a list of ``length``, wrapping cyclically; second value:
    whether it wrapped (ran past the end)."""
    return [(start + j) % length for j in range(n)], start + n > length


class PoolMiner(Miner):
    """Base of the pool-based miners: eligible lists, exclusion counters, score statistics and the
    generic parts of ``state_dict``. Subclasses keep their per-example state in ``self._examples``
    (``example_id -> JSON-serialisable dict``). Runtime arguments: those of
    :class:`~conan_core.miners.base.Miner` (and ``remine_fn`` for dynamic_v1); others are ignored,
    so a stage can pass one runtime to every miner. ``ranked_pool=False`` uses no ``rank_start``
    (the candidates are already chosen negatives, not a search whose top ranks must be skipped)."""

    Config = PoolMinerConfig

    def __init__(self, config: PoolMinerConfig, *, pool: Any = None, num_negatives: int = 7, seed: int = 0,
                 ranked_pool: bool = True, micro_batches: int = 1, **runtime: Any):
        if pool is None:
            raise MinerError(f"miner {type(self).__name__} needs a candidate pool: build it with "
                             "pool=CandidatePool.load(DIR) (see `conan mine`), or use miner 'in_batch'")
        if int(num_negatives) < 1:
            raise MinerError(f"miner {type(self).__name__}: num_negatives must be >= 1 (got {num_negatives}); "
                             "use miner 'in_batch' for no hard negatives")
        super().__init__(config, pool=CandidatePool.coerce(pool), num_negatives=num_negatives, seed=seed,
                         ranked_pool=ranked_pool, micro_batches=micro_batches)
        self.rank_start = config.rank_start if ranked_pool else 0
        self._eligible_cache: dict[str, list[Candidate]] = {}
        self._counted: set[str] = set()
        # replaced candidate lists of single examples (dynamic_v1 re-mining with a model)
        self._overrides: dict[str, CandidatePool] = {}
        self._examples: dict[str, dict[str, Any]] = {}
        self._pool_counts = {"excluded_false_negatives": 0, "excluded_by_margin": 0, "short_pools": 0,
                             "margin_fallback": 0}
        self._total = dict.fromkeys(_COUNTERS, 0)
        self._step = dict.fromkeys(_COUNTERS, 0)
        self._score_sum_step = 0.0
        self._hist_total = [0] * HIST_BINS
        self._hist_step = [0] * HIST_BINS

    # ------------------------------------------------------------------ negatives
    def negatives_for(self, example_ids: Sequence[str]) -> list[list[Candidate]]:
        """``len(example_ids)`` lists of exactly ``num_negatives`` candidates, in slot order."""
        out = []
        for eid in as_example_ids(example_ids):
            positions = self._active(eid)
            elig = self.eligible(eid)
            out.append([elig[p] for p in positions])
        return out

    @abstractmethod
    def _active(self, example_id: str) -> list[int]:
        """Positions in the eligible list of the negatives in use (``num_negatives`` of them)."""

    # ------------------------------------------------------------------ eligible candidates
    def _source(self, eid: str) -> CandidatePool:
        over = self._overrides.get(eid)
        if over is not None:
            return over
        if eid not in self.pool:
            raise MinerError(f"example {eid!r} is not in the candidate pool ({len(self.pool)} examples); "
                             "mine a pool that covers the training data (`conan mine`) or use miner 'in_batch'")
        return self.pool

    def eligible(self, example_id: str) -> list[Candidate]:
        """The example's eligible candidates, in the order negatives are taken (cached)."""
        cached = self._eligible_cache.get(example_id)
        if cached is not None:
            return cached
        cfg = self.config
        src = self._source(example_id)
        cands = src[example_id]
        positives = src.positive_texts(example_id) or self.pool.positive_texts(example_id)
        ref = src.positive_score(example_id)
        if ref is None and src is not self.pool:
            ref = self.pool.positive_score(example_id)
        limit = math.inf
        if cfg.relative_margin is not None and ref is not None:
            limit = cfg.relative_margin * ref
        if cfg.absolute_max is not None:
            limit = min(limit, cfg.absolute_max)
        banned = {normalize_text(t) for t in positives}
        out, false_neg, margin, over = [], 0, 0, []
        for cand in cands[self.rank_start:]:
            if banned and normalize_text(cand.text) in banned:
                false_neg += 1
            elif cand.score > limit:  # NaN (unknown score) compares False: kept
                margin += 1
                over.append(cand)
            else:
                out.append(cand)
        fallback = len(out) < self.num_negatives and bool(over)
        if fallback:  # fill up with the dropped ones in rank order: the hardest first
            out = sorted(out + over[:self.num_negatives - len(out)], key=lambda c: c.rank)
        if cfg.selection == "shuffled":
            random.Random(self._example_seed(example_id)).shuffle(out)
        if not out:
            raise MinerError(
                f"example {example_id!r} has no eligible candidate negative: {len(cands)} in the pool, "
                f"{min(len(cands), self.rank_start)} skipped by rank_start={self.rank_start}, {false_neg} equal "
                f"to a positive, {margin} above the score limit {limit:.4g}; mine a deeper pool "
                "(`conan mine --top-k`), or lower rank_start / relative_margin / absolute_max")
        if example_id not in self._counted:  # a resumed miner recomputes without counting twice
            self._counted.add(example_id)
            self._pool_counts["excluded_false_negatives"] += false_neg
            self._pool_counts["excluded_by_margin"] += margin
            self._pool_counts["short_pools"] += int(len(out) < self.num_negatives)
            self._pool_counts["margin_fallback"] += int(fallback)
        self._eligible_cache[example_id] = out
        return out

    def _example_seed(self, example_id: str) -> int:
        digest = hashlib.blake2b(f"{self.seed}\x1f{example_id}".encode("utf-8"), digest_size=8)
        return int.from_bytes(digest.digest(), "little")

    def _set_override(self, example_id: str, source: CandidatePool) -> None:
        """Use ``source``'s candidates for ``example_id`` from now on (counted as newly seen)."""
        one = CandidatePool({example_id: source.row(example_id)})
        self._overrides[example_id] = one
        self._eligible_cache.pop(example_id, None)
        self._counted.discard(example_id)

    # ------------------------------------------------------------------ observation helpers
    def _check_scores(self, ids: list[str], neg_scores: torch.Tensor) -> torch.Tensor:
        """Validate the shape and return the scores as a detached float32 CPU tensor."""
        n = self.num_negatives
        if not isinstance(neg_scores, torch.Tensor):
            raise TypeError(f"neg_scores must be a tensor [B, {n}] (got {type(neg_scores).__name__})")
        if neg_scores.dim() != 2 or neg_scores.shape != (len(ids), n):
            raise MinerError(f"{type(self).__name__}.observe: neg_scores has shape {tuple(neg_scores.shape)}, "
                             f"expected [len(example_ids)={len(ids)}, num_negatives={n}] in the column "
                             "order of negatives_for")
        # decisions are taken in float32, the precision the loss computes similarities in (RECIPE §5)
        return neg_scores.detach().to(device="cpu", dtype=torch.float32)

    def _record(self, scores: torch.Tensor) -> torch.Tensor:
        """Count observed scores into the step/total statistics; return the finite mask."""
        finite = torch.isfinite(scores)
        n_good = int(finite.sum())
        good = scores if n_good == scores.numel() else scores[finite]
        for counters in (self._step, self._total):
            counters["observe_calls"] += 1
            counters["observed"] += n_good
            counters["nonfinite"] += int(scores.numel()) - n_good
        if n_good:
            self._score_sum_step += float(good.sum(dtype=torch.float64))
            hist = torch.histc(good.clamp(*HIST_RANGE), bins=HIST_BINS, min=HIST_RANGE[0], max=HIST_RANGE[1])
            for i, c in enumerate(hist.tolist()):
                if c:
                    self._hist_step[i] += int(c)
                    self._hist_total[i] += int(c)
        return finite

    def _count(self, name: str, value: int = 1) -> None:
        self._step[name] += value
        self._total[name] += value

    # ------------------------------------------------------------------ stats
    def stats(self) -> dict[str, Any]:
        """Flat, JSON-serialisable counters: ``<name>_step`` (since the last reset) and
        ``<name>_total`` for observe_calls / observed / nonfinite / replaced / exhausted /
        remined_examples; pool counters (examples seen so far); ``score_mean_step``;
        ``score_hist_edges`` (41 floats over [-1, 1]) with ``score_hist_step`` / ``score_hist_total``
        (40 counts each, scores clamped into the range)."""
        out: dict[str, Any] = {}
        for name in _COUNTERS:
            out[f"{name}_step"] = self._step[name]
            out[f"{name}_total"] = self._total[name]
        out.update(self._pool_counts)
        out["examples_tracked"] = len(self._examples)
        out["score_mean_step"] = (self._score_sum_step / self._step["observed"]) if self._step["observed"] else None
        lo, hi = HIST_RANGE
        out["score_hist_edges"] = [lo + (hi - lo) * i / HIST_BINS for i in range(HIST_BINS + 1)]
        out["score_hist_step"] = list(self._hist_step)
        out["score_hist_total"] = list(self._hist_total)
        return out

    def reset_step_stats(self) -> None:
        self._step = dict.fromkeys(_COUNTERS, 0)
        self._score_sum_step = 0.0
        self._hist_step = [0] * HIST_BINS

    # ------------------------------------------------------------------ state
    def _layout(self) -> dict[str, Any]:
        """What must match between a saved state and this miner for the state to mean the same."""
        cfg = self.config
        return {"miner": type(self).__name__, "num_negatives": self.num_negatives, "rank_start": self.rank_start,
                "relative_margin": cfg.relative_margin, "absolute_max": cfg.absolute_max,
                "selection": cfg.selection, "seed": self.seed, "pool_examples": len(self.pool)}

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "layout": self._layout(),
            "examples": {k: _copy_json(v) for k, v in self._examples.items()},
            "overrides": {k: v.row(k) for k, v in self._overrides.items()},
            "counted": sorted(self._counted),
            "pool_counts": dict(self._pool_counts),
            "total": dict(self._total),
            "step": dict(self._step),
            "score_sum_step": self._score_sum_step,
            "hist_total": list(self._hist_total),
            "hist_step": list(self._hist_step),
            "extra": self._extra_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise MinerError(f"miner state version {state.get('version')!r} is not {STATE_VERSION}")
        mine, theirs = self._layout(), dict(state.get("layout", {}))
        diff = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
        if diff:
            detail = ", ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in diff.items())
            raise MinerError(f"miner state does not fit this miner ({detail}); resume with the same miner "
                             "config and pool, or start the miner without its state")
        self._examples = {k: _copy_json(v) for k, v in state["examples"].items()}
        self._overrides = {k: CandidatePool({k: row}) for k, row in state["overrides"].items()}
        self._eligible_cache = {}
        self._counted = set(state["counted"])
        self._pool_counts = {"margin_fallback": 0, **dict(state["pool_counts"])}
        self._total = {k: int(state["total"].get(k, 0)) for k in _COUNTERS}
        self._step = {k: int(state["step"].get(k, 0)) for k in _COUNTERS}
        self._score_sum_step = float(state["score_sum_step"])
        self._hist_total = [int(c) for c in state["hist_total"]]
        self._hist_step = [int(c) for c in state["hist_step"]]
        self._load_extra_state(state.get("extra", {}))

    def _extra_state(self) -> dict[str, Any]:
        """Subclass state beyond ``_examples`` (JSON-serialisable)."""
        return {}

    def _load_extra_state(self, extra: Mapping[str, Any]) -> None:
        """Restore :meth:`_extra_state`; the base has none."""
        if extra:
            raise MinerError(f"unexpected extra miner state {sorted(extra)} for {type(self).__name__}")


def _copy_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, deque)):
        return [_copy_json(v) for v in value]
    return value
