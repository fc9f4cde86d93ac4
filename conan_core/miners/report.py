"""What a miner starts training with: the pool ranks and score gaps of every example's first
negatives, and how often the filters had to fall back (``metrics.json`` ``mine``)."""

from __future__ import annotations

import math
import statistics
from typing import Any, Iterable

GAP_BINS = 20
GAP_RANGE = (-1.0, 1.0)


def initial_negatives_report(miner: Any, pool: Any, example_ids: Iterable[str] | None = None) -> dict[str, Any]:
    """Statistics of the negatives ``miner`` (freshly built: this call changes its state) gives each
    example of ``pool`` before any observation, i.e. what each example's first training step uses.

    Returns ``mean_negative_rank`` / ``median_negative_rank`` (1-based pool ranks), ``examples``,
    ``fallback_fraction`` (share of examples whose score filters left fewer than ``num_negatives``
    candidates), the exclusion counters, ``mean_score_gap`` and ``score_gap_hist`` (positive score
    minus negative score, where the pool knows both; ``edges`` and ``counts``).
    """
    ids = list(example_ids if example_ids is not None else pool)
    ranks: list[int] = []
    gaps: list[float] = []
    for eid in ids:
        negatives = miner.negatives_for([eid])[0]
        ranks.extend(int(c.rank) for c in negatives)
        positive = pool.positive_score(eid)
        if positive is not None and math.isfinite(positive):
            gaps.extend(positive - float(c.score) for c in negatives if math.isfinite(float(c.score)))
    stats = miner.stats()
    lo, hi = GAP_RANGE
    counts = [0] * GAP_BINS
    for gap in gaps:
        counts[min(GAP_BINS - 1, max(0, int((gap - lo) / (hi - lo) * GAP_BINS)))] += 1
    n = max(1, len(ids))
    return {
        "examples": len(ids),
        "negatives_per_example": getattr(miner, "num_negatives", None),
        "mean_negative_rank": statistics.fmean(ranks) if ranks else None,
        "median_negative_rank": statistics.median(ranks) if ranks else None,
        "fallback_fraction": stats.get("margin_fallback", 0) / n,
        "excluded_false_negatives": stats.get("excluded_false_negatives", 0),
        "excluded_by_margin": stats.get("excluded_by_margin", 0),
        "short_pools": stats.get("short_pools", 0),
        "mean_score_gap": statistics.fmean(gaps) if gaps else None,
        "score_gap_hist": {"edges": [lo + (hi - lo) * i / GAP_BINS for i in range(GAP_BINS + 1)], "counts": counts},
    }
