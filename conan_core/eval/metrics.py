"""Pure metric functions: nDCG@k, Recall@k, MRR@k (retrieval) and Spearman (STS).

Conventions (those of trec_eval / pytrec_eval, which MTEB uses):

* a document is *relevant* to a query when its qrel score is > 0; graded scores are the gains;
* nDCG@k uses linear gains ``rel_i / log2(i + 1)`` (rank i = 1, 2, ...) and the ideal DCG of the
  query's qrels sorted by score (all of them, not only the retrieved ones);
* Recall@k = |relevant ∩ top-k| / |relevant|;
* MRR@k = 1 / rank of the first relevant document in the top k, 0 when there is none;
* queries without any relevant document are left out of every average (they have no defined
  recall), and the number of evaluated queries is returned with the averages.

Two implementations: the per-query functions (plain Python, the reference) and
:func:`retrieval_metrics`, which scores all queries at once on a [Q, K] gain matrix; the tests check
that they agree on random rankings.
"""

from __future__ import annotations

import math
from typing import Hashable, Mapping, Sequence

import numpy as np

Qrels = Mapping[Hashable, Mapping[Hashable, float]]


# ----------------------------------------------------------------------------- per query (reference)

def ndcg_at_k(ranking: Sequence[Hashable], relevant: Mapping[Hashable, float], k: int) -> float:
    """nDCG@k of one ranked list (best first) against graded ``relevant`` {doc: score}; in [0, 1].

    Documents scored <= 0 count as non-relevant; a query without relevant documents gives 0.
    """
    _check_k(k)
    gains = [float(relevant.get(doc, 0.0)) for doc in ranking[:k]]
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains) if g > 0)
    ideal = sorted((float(s) for s in relevant.values() if s > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranking: Sequence[Hashable], relevant: Mapping[Hashable, float], k: int) -> float:
    """Fraction of the relevant (score > 0) documents found in the top k; in [0, 1]."""
    _check_k(k)
    wanted = {doc for doc, s in relevant.items() if s > 0}
    if not wanted:
        return 0.0
    return len(wanted.intersection(ranking[:k])) / len(wanted)


def mrr_at_k(ranking: Sequence[Hashable], relevant: Mapping[Hashable, float], k: int) -> float:
    """Reciprocal rank of the first relevant document within the top k (0 if none); in [0, 1]."""
    _check_k(k)
    for i, doc in enumerate(ranking[:k]):
        if relevant.get(doc, 0.0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def _check_k(k: int) -> None:
    if int(k) < 1:
        raise ValueError(f"k must be >= 1 (got {k})")


# ----------------------------------------------------------------------------- all queries at once

def retrieval_metrics(
    rankings: Mapping[Hashable, Sequence[Hashable]],
    qrels: Qrels,
    *,
    ndcg_k: Sequence[int] = (10,),
    recall_k: Sequence[int] = (1, 10, 100),
    mrr_k: Sequence[int] = (10,),
    per_query: bool = False,
) -> dict:
    """Mean nDCG@k / Recall@k / MRR@k over the queries of ``qrels`` that have a relevant document.

    ``rankings`` maps a query id to its retrieved doc ids, best first (at least max(k) long when
    the corpus allows; shorter lists simply retrieve nothing further). Returns
    ``{"ndcg@10": float, "recall@1": ..., "mrr@10": ..., "n_queries": int}``; with ``per_query``
    also ``"per_query": {metric: np.ndarray [n_queries] float64}`` in the order of
    ``"query_ids"``. A query of ``qrels`` missing from ``rankings`` counts as retrieving nothing.
    """
    for k in (*ndcg_k, *recall_k, *mrr_k):
        _check_k(k)
    qids = [q for q, rel in qrels.items() if any(s > 0 for s in rel.values())]
    depth = max((*ndcg_k, *recall_k, *mrr_k))
    n = len(qids)
    gains = np.zeros((n, depth), dtype=np.float64)
    n_rel = np.zeros(n, dtype=np.float64)
    ideal = np.zeros((n, depth), dtype=np.float64)
    for row, qid in enumerate(qids):
        rel = qrels[qid]
        ranked = list(rankings.get(qid, ()))[:depth]
        gains[row, :len(ranked)] = [max(float(rel.get(doc, 0.0)), 0.0) for doc in ranked]
        positive = sorted((float(s) for s in rel.values() if s > 0), reverse=True)
        n_rel[row] = len(positive)
        ideal[row, :min(len(positive), depth)] = positive[:depth]
    discount = 1.0 / np.log2(np.arange(2, depth + 2, dtype=np.float64))
    hit = gains > 0
    out: dict = {}
    per: dict[str, np.ndarray] = {}
    for k in ndcg_k:
        dcg = (gains[:, :k] * discount[:k]).sum(axis=1)
        idcg = (ideal[:, :k] * discount[:k]).sum(axis=1)
        per[f"ndcg@{k}"] = np.divide(dcg, idcg, out=np.zeros(n), where=idcg > 0)
    for k in recall_k:
        per[f"recall@{k}"] = np.divide(hit[:, :k].sum(axis=1), n_rel, out=np.zeros(n), where=n_rel > 0)
    for k in mrr_k:
        found = hit[:, :k].any(axis=1)
        rank = hit[:, :k].argmax(axis=1) + 1.0  # 1-based rank of the first hit (1 when none: masked)
        per[f"mrr@{k}"] = np.where(found, 1.0 / rank, 0.0)
    for name, values in per.items():
        out[name] = float(values.mean()) if n else 0.0
    out["n_queries"] = n
    if per_query:
        out["per_query"] = per
        out["query_ids"] = qids
    return out


# ----------------------------------------------------------------------------- correlation

def rankdata(values: Sequence[float]) -> np.ndarray:
    """1-based ranks, ties sharing the mean of their ranks (scipy's ``method="average"``); float64 [N]."""
    x = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # a new group starts wherever the sorted value changes
    starts = np.r_[True, sorted_x[1:] != sorted_x[:-1]]
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    counts = np.diff(np.r_[first, x.size])
    mean_rank = first + (counts + 1) / 2.0  # ranks first+1 .. first+count, averaged
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = mean_rank[group]
    return ranks


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation in float64; NaN when either side is constant or has < 2 values."""
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"pearson: lengths differ ({a.size} vs {b.size})")
    if a.size < 2:
        return float("nan")
    a = a - a.mean()
    b = b - b.mean()
    denom = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation with average ranks for ties, in [-1, 1] (NaN if a side is constant)."""
    return pearson(rankdata(x), rankdata(y))


def accuracy(predicted: Sequence[Hashable], gold: Sequence[Hashable]) -> float:
    """Fraction of equal pairs; in [0, 1] (0 for empty input)."""
    if len(predicted) != len(gold):
        raise ValueError(f"accuracy: lengths differ ({len(predicted)} vs {len(gold)})")
    if not gold:
        return 0.0
    return sum(p == g for p, g in zip(predicted, gold)) / len(gold)
