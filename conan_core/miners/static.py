"""``static``: a fixed window of each example's offline candidate pool (no replacement)."""

from __future__ import annotations

from typing import Sequence

import torch

from conan_core.miners.base import as_example_ids
from conan_core.miners.pooled import PoolMiner, PoolMinerConfig, window


class StaticMiner(PoolMiner):
    """The first ``num_negatives`` eligible candidates of each example, for the whole run.

    With the defaults (``rank_start=10``, no candidate filtered) that is pool ranks 11..17 (1-based):
    ranks 1..10 are never used (RECIPE §4). Candidates equal to a positive (after
    :func:`~conan_core.miners.pool.normalize_text`) are never returned, and candidates scoring above
    ``relative_margin × positive score`` (TopK-PercPos) or ``absolute_max`` are skipped; see
    :mod:`conan_core.miners.pooled` for the eligible list and the short-pool policy (cyclic repeat).
    ``observe`` only records score statistics and always returns all-False.
    """

    class Config(PoolMinerConfig):
        """Static hard negatives: the shared pool fields only."""

    def _active(self, example_id: str) -> list[int]:
        return window(0, self.num_negatives, len(self.eligible(example_id)))[0]

    def observe(self, example_ids: Sequence[str], neg_scores: torch.Tensor) -> torch.Tensor:
        """Record statistics; return ``zeros(B, n, bool)`` on ``neg_scores.device``."""
        ids = as_example_ids(example_ids)
        self._record(self._check_scores(ids, neg_scores))
        return torch.zeros(neg_scores.shape, dtype=torch.bool, device=neg_scores.device)
