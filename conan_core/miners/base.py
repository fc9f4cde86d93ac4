"""Base class of hard-negative miners (registry kind ``miners``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import torch

from conan_core.registry import ComponentConfig


class Miner(ABC):
    """Chooses the hard negatives of each training example and, for dynamic miners, replaces them.

    Built as ``REGISTRIES["miners"].build({"type": KEY, **fields}, pool=POOL, num_negatives=N,
    seed=S, ranked_pool=True)``. Runtime arguments (the stage's values, never config fields):

    * ``pool``: a :class:`~conan_core.miners.pool.CandidatePool` or a plain mapping ``example_id ->
      ranked candidates`` (normalised by ``CandidatePool.coerce``); miners with ``needs_pool =
      False`` accept None;
    * ``num_negatives``: negatives per example (``supervised.num_negatives``, RECIPE: 7);
    * ``seed``: the seed of any random choice (the run's seed plus the rank);
    * ``ranked_pool``: True when the pool is a ranked search (``conan mine``), whose top ranks the
      paper never uses; False when the candidates are already chosen negatives (the shards' own
      ``neg`` lists), none of which should be skipped;
    * ``micro_batches``: ``observe`` calls per optimizer step (gradient accumulation), so intervals
      count optimizer steps;
    * ``remine_fn``: optional ``example_ids -> pool`` re-ranking those examples' candidates with the
      current model (``dynamic_v1``'s re-mining); other miners ignore it.

    The supervised data stream (:class:`conan_core.train.streams.SupervisedStream`) owns the
    miner and calls, every step:

    * ``negatives_for(example_ids) -> list[list[Candidate]]``: the negatives in use for each
      example, exactly ``num_negatives`` per example (0 for ``in_batch``), in a fixed column order;
    * ``observe(example_ids, neg_scores FloatTensor[B, n]) -> BoolTensor[B, n]``: the scores the loss
      computed this step for those same negatives (same row/column order); ``True`` = that negative
      is replaced, and the replacement is what the *next* ``negatives_for`` call returns;
    * ``stats() -> dict`` and ``reset_step_stats()``: counters for logging (call reset once per
      optimizer step after logging, so "step" counters cover exactly one step);
    * ``state_dict()`` / ``load_state_dict()``: plain JSON-serialisable data; continuing after a
      load gives exactly what the uninterrupted run gives.

    Example ids are strings; ints (or a LongTensor) are accepted and converted with ``str``.
    """

    #: whether :meth:`__init__` needs a candidate pool
    needs_pool: bool = True
    #: whether the miner calls its runtime ``remine_fn`` (the stage builds one only then)
    remines: bool = False

    class Config(ComponentConfig):
        """No fields at this level."""

    @abstractmethod
    def __init__(self, config: ComponentConfig, *, pool: Any = None, num_negatives: int = 7, seed: int = 0,
                 ranked_pool: bool = True, micro_batches: int = 1, **runtime: Any):
        self.config = config
        self.pool = pool
        self.num_negatives = int(num_negatives)
        self.seed = int(seed)
        self.ranked_pool = bool(ranked_pool)
        self.micro_batches = max(1, int(micro_batches))

    @abstractmethod
    def negatives_for(self, example_ids: Sequence[str]) -> list:
        """``[[Candidate] * num_negatives for each id]`` — see the class docstring."""

    @abstractmethod
    def observe(self, example_ids: Sequence[str], neg_scores: torch.Tensor) -> torch.Tensor:
        """``neg_scores`` float [B, n] -> bool [B, n] on the same device; see the class docstring."""

    @abstractmethod
    def stats(self) -> dict:
        """Counters of this step and in total, and score-histogram data (JSON-serialisable)."""

    @abstractmethod
    def reset_step_stats(self) -> None:
        """Zero the per-step counters (totals are kept)."""

    @abstractmethod
    def state_dict(self) -> dict:
        """Everything needed for an exact resume, as JSON-serialisable python data."""

    @abstractmethod
    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""


def as_example_ids(example_ids: Any) -> list[str]:
    """Example ids as a list of str (accepts any sequence of str/int or a 1-D integer tensor)."""
    if isinstance(example_ids, torch.Tensor):
        example_ids = example_ids.reshape(-1).tolist()
    if isinstance(example_ids, (str, bytes)):
        raise TypeError("example_ids must be a sequence of ids, not a single string")
    return [i if isinstance(i, str) else str(i) for i in example_ids]
