"""static miner, the shared eligibility rules (rank window, positive-aware filters, false negatives),
and the in_batch miner."""

from __future__ import annotations

import json

import pytest
import torch

from conan_core.errors import ConfigError
from conan_core.miners.pool import Candidate, CandidatePool, normalize_text
from conan_core.miners.pooled import MinerError
from conan_core.registries import REGISTRIES


def build(key, pool, num_negatives=7, **fields):
    """A miner of ``key``; ``num_negatives`` is the stage's value, a runtime argument."""
    return REGISTRIES["miners"].build({"type": key, **fields}, pool=pool, num_negatives=num_negatives)


def _pool(n=30, score=lambda r: 0.9 - 0.02 * r, **extras):
    return CandidatePool({"e": [(f"c{r}", f"text {r}", score(r)) for r in range(1, n + 1)]}, **extras)


def test_default_window_is_ranks_11_to_17():
    miner = build("static", _pool())
    negs = miner.negatives_for(["e"])[0]
    assert [c.rank for c in negs] == list(range(11, 18)) and [c.id for c in negs] == [f"c{r}" for r in range(11, 18)]
    assert miner.observe(["e"], torch.zeros(1, 7)).tolist() == [[False] * 7]
    assert [c.id for c in miner.negatives_for(["e"])[0]] == [c.id for c in negs]


def test_relative_margin_drops_candidates_near_the_positive_score():
    # positive scores 0.5 -> limit 0.95·0.5 = 0.475: ranks scoring 0.70 .. 0.48 are dropped
    pool = _pool(score=lambda r: 0.9 - 0.02 * r, positive_scores={"e": 0.5})
    miner = build("static", pool, rank_start=0, num_negatives=3, relative_margin=0.95)
    negs = miner.negatives_for(["e"])[0]
    assert all(c.score <= 0.475 for c in negs) and [c.id for c in negs] == ["c22", "c23", "c24"]
    assert miner.stats()["excluded_by_margin"] == 21
    # the filter is off by default (RECIPE §4: not in the paper)
    off = build("static", pool, rank_start=0, num_negatives=3)
    assert [c.id for c in off.negatives_for(["e"])[0]] == ["c1", "c2", "c3"]


def test_a_filter_leaving_too_few_is_filled_in_rank_order_never_with_the_least_similar():
    # limit 0.95·0.5 = 0.475 leaves only c22..c30 (9); 12 negatives are wanted: the 3 hardest dropped
    # ones (c1, c2, c3: ranks in order) fill up, and the example is counted as a fallback
    pool = _pool(score=lambda r: 0.9 - 0.02 * r, positive_scores={"e": 0.5})
    miner = build("static", pool, rank_start=0, num_negatives=12, relative_margin=0.95)
    ids = [c.id for c in miner.negatives_for(["e"])[0]]
    assert ids == ["c1", "c2", "c3"] + [f"c{r}" for r in range(22, 31)]
    assert miner.stats()["margin_fallback"] == 1


def test_weakest_positive_is_the_reference():
    pool = _pool(positives={"e": ["p1", "p2"]}, positive_scores={"e": [0.9, 0.5]})
    assert pool.positive_score("e") == 0.5


def test_absolute_max_and_unknown_scores():
    pool = CandidatePool({"e": [("a", "A", 0.9), ("b", "B text", float("nan")), ("c", "C", 0.61), ("d", "D", 0.6)]})
    miner = build("static", pool, rank_start=0, num_negatives=2, absolute_max=0.6)
    assert [c.id for c in miner.negatives_for(["e"])[0]] == ["b", "d"]   # NaN is never dropped by score
    assert miner.stats()["excluded_by_margin"] == 2


def test_false_negatives_are_never_returned_and_counted():
    # RELIABILITY #14: case / whitespace variants of the positive are excluded and counted
    positive = "The Eiffel Tower is in  Paris."
    variants = ["the eiffel tower is in paris.", "  THE EIFFEL TOWER IS IN PARIS. ", "The\tEiffel Tower is\nin Paris."]
    cands = [(f"c{r}", f"text {r}", 0.5) for r in range(20)]
    for i, v in enumerate(variants):
        cands.insert(3 + 4 * i, (f"dup{i}", v, 0.5))
    cands.insert(1, ("top", positive, 0.99))   # inside the top rank_start: never usable anyway
    pool = CandidatePool({"e": cands, "f": [(f"f{r}", f"other {r}", 0.5) for r in range(12)]},
                         positives={"e": positive, "f": "unrelated"})
    for key in ("static", "dynamic_v2", "dynamic_v1"):
        miner = build(key, pool, rank_start=0, num_negatives=18)
        negs = miner.negatives_for(["e", "f"])
        banned = {normalize_text(positive)}
        assert all(normalize_text(c.text) not in banned for row in negs for c in row)
        assert miner.stats()["excluded_false_negatives"] == 4, key
    # the default rank_start skips positions 1..10 first (top, dup0, dup1); dup2 (rank 13) is counted
    assert [c.id for c in pool["e"]].index("dup2") + 1 == 13
    miner = build("static", pool)
    miner.negatives_for(["e"])
    assert miner.stats()["excluded_false_negatives"] == 1


def test_exclusion_count_is_not_doubled_by_a_resume():
    pool = _pool(positives={"e": "text 12"})
    miner = build("static", pool)
    miner.negatives_for(["e"])
    again = build("static", pool)
    again.load_state_dict(json.loads(json.dumps(miner.state_dict())))
    assert [c.id for c in again.negatives_for(["e"])[0]] == [c.id for c in miner.negatives_for(["e"])[0]]
    assert again.stats()["excluded_false_negatives"] == 1


def test_short_pool_repeats_and_empty_or_missing_raise():
    miner = build("static", _pool(n=12))
    assert [c.id for c in miner.negatives_for(["e"])[0]] == ["c11", "c12"] * 3 + ["c11"]
    assert miner.stats()["short_pools"] == 1
    with pytest.raises(MinerError, match="no eligible candidate"):
        build("static", _pool(n=10)).negatives_for(["e"])
    with pytest.raises(MinerError, match="not in the candidate pool"):
        miner.negatives_for(["nope"])
    with pytest.raises(MinerError, match="needs a candidate pool"):
        build("static", None)


def test_plain_dict_pools_in_every_form():
    pool = {"e": ["just a text", ("i2", "tuple text", 0.4), Candidate("i3", "cand", 0.3, 99),
                  {"id": "i4", "text": "mapping", "score": 0.2}]}
    miner = build("static", pool, rank_start=0, num_negatives=4)
    negs = miner.negatives_for(["e"])[0]
    assert [c.text for c in negs] == ["just a text", "tuple text", "cand", "mapping"]
    assert [c.rank for c in negs] == [1, 2, 3, 4]
    assert negs[0].id.startswith("text:")
    # int ids and tensors of ids are accepted
    miner2 = build("static", {"7": [("a", "A", 0.1)]}, rank_start=0, num_negatives=1)
    assert miner2.negatives_for(torch.tensor([7]))[0][0].id == "a"


def test_static_stats_histogram():
    miner = build("static", _pool())
    miner.observe(["e"], torch.tensor([[-1.0, -0.99, 0.0, 0.5, 1.0, float("nan"), 2.0]]))
    st = miner.stats()
    assert sum(st["score_hist_step"]) == 6 and st["nonfinite_step"] == 1
    assert st["score_hist_step"][0] == 2 and st["score_hist_step"][-1] == 2
    assert len(st["score_hist_edges"]) == len(st["score_hist_total"]) + 1
    miner.reset_step_stats()
    assert sum(miner.stats()["score_hist_step"]) == 0 and sum(miner.stats()["score_hist_total"]) == 6
    json.dumps(miner.stats())


def test_in_batch_has_no_hard_negatives():
    miner = REGISTRIES["miners"].build({"type": "in_batch"})
    assert miner.negatives_for(["a", "b"]) == [[], []] and miner.num_negatives == 0
    out = miner.observe(["a", "b"], torch.zeros(2, 0))
    assert out.shape == (2, 0) and out.dtype == torch.bool
    assert miner.stats()["observe_calls_total"] == 1
    other = REGISTRIES["miners"].build({"type": "in_batch"}, pool=_pool())
    other.load_state_dict(json.loads(json.dumps(miner.state_dict())))
    assert other.state_dict() == miner.state_dict()
    with pytest.raises(ValueError, match="no hard negatives"):
        miner.observe(["a"], torch.zeros(1, 3))


def test_score_filter_that_leaves_nothing_falls_back_to_the_hardest_in_rank_order():
    # a weak early model: every candidate beyond rank 10 scores above 0.95 x the positive's 0.5
    pool = _pool(n=14, score=lambda r: 0.99 - 0.001 * r, positive_scores={"e": 0.5})
    miner = build("static", pool, num_negatives=4, relative_margin=0.95)
    negs = miner.negatives_for(["e"])[0]
    assert [c.id for c in negs] == ["c11", "c12", "c13", "c14"]  # rank order: still hard negatives
    stats = miner.stats()
    assert stats["margin_fallback"] == 1 and stats["excluded_by_margin"] == 4
    again = build("static", pool, num_negatives=4, relative_margin=0.95)
    again.load_state_dict(json.loads(json.dumps(miner.state_dict())))
    assert [c.id for c in again.negatives_for(["e"])[0]] == [c.id for c in negs]


def test_stage_values_are_runtime_arguments():
    from conan_core.miners.pooled import MinerError

    pool = _pool()
    searched = build("static", pool, num_negatives=3, relative_margin=None)  # a ranked search: ranks 1..10 unused
    given = REGISTRIES["miners"].build({"type": "static", "relative_margin": None}, pool=pool, num_negatives=3,
                                       ranked_pool=False)
    assert [c.rank for c in searched.negatives_for(["e"])[0]] == [11, 12, 13]
    assert [c.rank for c in given.negatives_for(["e"])[0]] == [1, 2, 3]  # chosen negatives: none skipped
    with pytest.raises(MinerError, match="num_negatives must be >= 1"):
        build("static", pool, num_negatives=0)
    with pytest.raises(ConfigError, match="num_negatives"):  # no longer a miner field: supervised.num_negatives
        REGISTRIES["miners"].build({"type": "static", "num_negatives": 3}, pool=pool)
