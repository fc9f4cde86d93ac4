"""Metric functions against hand-computed values, and the vectorised path against the reference."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy import stats

from conan_core.eval.metrics import (
    accuracy,
    mrr_at_k,
    ndcg_at_k,
    pearson,
    rankdata,
    recall_at_k,
    retrieval_metrics,
    spearman,
)

RANKING = ["d1", "d2", "d3", "d4"]
GRADED = {"d2": 2, "d4": 1, "d5": 3, "d9": 0}  # d5 is never retrieved; d9 is judged non-relevant


def test_ndcg_graded_by_hand():
    # DCG@3 = 2 / log2(3); IDCG@3 = 3 + 2 / log2(3) + 1 / log2(4)
    assert ndcg_at_k(RANKING, GRADED, 3) == pytest.approx(0.26499301486112564, abs=1e-12)
    # at k=4 d4 (gain 1, rank 4) adds 1 / log2(5)
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    idcg = 3 + 2 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(RANKING, GRADED, 4) == pytest.approx(dcg / idcg, abs=1e-12)
    assert ndcg_at_k(["d5", "d2", "d4"], GRADED, 3) == pytest.approx(1.0)
    assert ndcg_at_k(RANKING, {"x": 1}, 10) == 0.0
    assert ndcg_at_k(RANKING, {}, 10) == 0.0


def test_recall_and_mrr_by_hand():
    assert recall_at_k(RANKING, GRADED, 1) == 0.0
    assert recall_at_k(RANKING, GRADED, 3) == pytest.approx(1 / 3)
    assert recall_at_k(RANKING, GRADED, 4) == pytest.approx(2 / 3)
    assert recall_at_k(RANKING, GRADED, 100) == pytest.approx(2 / 3)
    assert mrr_at_k(RANKING, GRADED, 1) == 0.0
    assert mrr_at_k(RANKING, GRADED, 3) == 0.5
    assert mrr_at_k(["d4", "d2"], GRADED, 10) == 1.0
    with pytest.raises(ValueError):
        recall_at_k(RANKING, GRADED, 0)


def test_retrieval_metrics_means_and_skips_unjudged_queries():
    rankings = {"q1": RANKING, "q2": ["d7", "d8"], "q3": ["d1"]}
    qrels = {"q1": GRADED, "q2": {"d8": 1}, "q3": {"d1": 0}}  # q3 has no relevant doc: left out
    res = retrieval_metrics(rankings, qrels, ndcg_k=[3], recall_k=[1, 2], mrr_k=[10])
    assert res["n_queries"] == 2
    assert res["ndcg@3"] == pytest.approx((0.26499301486112564 + 1 / math.log2(3)) / 2)
    assert res["recall@1"] == pytest.approx(0.0)
    assert res["recall@2"] == pytest.approx((1 / 3 + 1.0) / 2)
    assert res["mrr@10"] == pytest.approx((0.5 + 0.5) / 2)
    # a judged query missing from the rankings retrieves nothing
    res = retrieval_metrics({}, {"q2": {"d8": 1}}, ndcg_k=[10], recall_k=[10], mrr_k=[10])
    assert res["ndcg@10"] == res["recall@10"] == res["mrr@10"] == 0.0 and res["n_queries"] == 1


def test_vectorised_metrics_match_reference_on_random_rankings():
    rng = random.Random(1234)
    docs = [f"d{i}" for i in range(40)]
    rankings, qrels = {}, {}
    for q in range(60):
        rankings[q] = rng.sample(docs, rng.randint(0, 25))
        qrels[q] = {d: rng.choice([0, 1, 2, 3]) for d in rng.sample(docs, rng.randint(0, 6))}
    res = retrieval_metrics(rankings, qrels, ndcg_k=[1, 5, 10], recall_k=[1, 3, 20, 30],
                            mrr_k=[4, 10], per_query=True)
    judged = [q for q, rel in qrels.items() if any(s > 0 for s in rel.values())]
    assert res["query_ids"] == judged
    for name, fn in (("ndcg", ndcg_at_k), ("recall", recall_at_k), ("mrr", mrr_at_k)):
        for key in [k for k in res["per_query"] if k.startswith(name + "@")]:
            k = int(key.split("@")[1])
            ref = np.array([fn(rankings[q], qrels[q], k) for q in judged], dtype=np.float64)
            np.testing.assert_allclose(res["per_query"][key], ref, rtol=0, atol=1e-12)
            assert res[key] == pytest.approx(ref.mean(), abs=1e-12)


def test_spearman_with_ties_by_hand_and_against_scipy():
    x, y = [1, 2, 2, 3], [1, 3, 2, 4]
    np.testing.assert_array_equal(rankdata(x), [1, 2.5, 2.5, 4])
    # ranks [1, 2.5, 2.5, 4] vs [1, 3, 2, 4]: 4.5 / sqrt(4.5 * 5)
    assert spearman(x, y) == pytest.approx(4.5 / math.sqrt(4.5 * 5), abs=1e-12)
    assert spearman([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    rng = np.random.default_rng(0)
    for _ in range(5):
        a = rng.integers(0, 6, size=50).astype(float)  # many ties
        b = a + rng.normal(size=50)
        assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
        assert pearson(a, b) == pytest.approx(stats.pearsonr(a, b).statistic, abs=1e-12)


def test_accuracy():
    assert accuracy(["a", "b", "b"], ["a", "b", "c"]) == pytest.approx(2 / 3)
    assert accuracy([], []) == 0.0
    with pytest.raises(ValueError):
        accuracy(["a"], [])
