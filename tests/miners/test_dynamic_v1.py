"""dynamic_v1: the RECIPE §4 v1 rule, interval boundaries, rank windows, remine_fn and resume."""

from __future__ import annotations

import json
import random

import pytest
import torch

from conan_core.miners.dynamic_v1 import DynamicV1Miner, row_means, v1_should_remine
from conan_core.miners.pool import CandidatePool
from conan_core.registries import REGISTRIES

NAN = float("nan")

# (S_init, S_cur, re-mine?)
RULE_TABLE = [
    (0.60, 0.50, True),     # 1.15·0.50 = 0.575 < 0.60 (just below)
    (0.60, 0.53, False),    # 1.15·0.53 = 0.6095 > 0.60 (just above)
    (0.575, 0.50, False),   # 1.15·0.50 = 0.575, not < 0.575
    (0.95, 0.79, True),     # |S_cur| = 0.79 < 0.8
    (0.95, 0.80, False),    # |S_cur| = 0.80 is not < 0.8
    (0.95, -0.79, True),
    (0.95, -0.80, False),
    (-0.10, -0.10, True),   # the rule as written also fires for negative means
    (0.10, 0.10, False),
    (0.60, NAN, False),
]


@pytest.mark.parametrize("s_init,s_cur,expected", RULE_TABLE)
def test_rule_table(s_init, s_cur, expected):
    got = v1_should_remine(torch.tensor([s_init]), torch.tensor([s_cur]))
    assert got.tolist() == [expected]


def test_rule_matches_float64_reference_on_random_means():
    gen = torch.Generator().manual_seed(5)
    a = torch.rand(20000, generator=gen) * 2 - 1
    b = torch.rand(20000, generator=gen) * 2 - 1
    got = v1_should_remine(a, b).tolist()
    checked = 0
    for x, y, g in zip(a.double().tolist(), b.double().tolist(), got):
        if min(abs(1.15 * y - x), abs(abs(y) - 0.8)) < 1e-6:
            continue
        assert g == (1.15 * y < x and abs(y) < 0.8)
        checked += 1
    assert checked > 19000


def test_row_means_of_equal_scores_are_exact():
    scores = torch.tensor([[0.8] * 7, [0.79] * 7, [0.5, NAN, 0.7, 0.6, 0.6, 0.6, 0.6]])
    means = row_means(scores)
    assert means[0] == torch.tensor(0.8).item() and means[1] == torch.tensor(0.79).item()
    assert abs(means[2] - 0.6) < 1e-6
    assert row_means(torch.tensor([[NAN, NAN]])) == [None]


def _pool(num_examples=2, cands=40):
    return {f"e{i}": [(f"e{i}-c{r}", f"text {i} {r}", 0.9 - 0.01 * r) for r in range(1, cands + 1)]
            for i in range(num_examples)}


def _build(pool=None, **fields):
    return REGISTRIES["miners"].build({"type": "dynamic_v1", **fields}, pool=pool or _pool())


def _ranks(miner, eid="e0"):
    return [c.rank for c in miner.negatives_for([eid])[0]]


def test_windows_follow_the_paper_ranks_and_the_interval_boundary():
    miner = _build()
    assert _ranks(miner) == list(range(11, 18))        # k = 1: ranks 11..17, 1..10 never used
    full = torch.full((1, 7), 0.6)
    assert not miner.observe(["e0"], full).any()       # step 1: S_init = 0.6
    for step in range(2, 100):                         # steps 2..99: S_cur = 0.5 (1.15·0.5 < 0.6)
        assert not miner.observe(["e0"], torch.full((1, 7), 0.5)).any(), step
    assert _ranks(miner) == list(range(11, 18))
    mask = miner.observe(["e0"], torch.full((1, 7), 0.5))  # step 100: the check
    assert mask.tolist() == [[True] * 7]
    assert _ranks(miner) == list(range(18, 25))        # k = 2: ranks (k-1)·7+10 .. k·7+10
    st = miner.stats()
    assert st["remined_examples_total"] == 1 and st["replaced_total"] == 7
    # the new set has a fresh S_init; at the next check it is still hard
    miner.observe(["e0"], torch.full((1, 7), 0.7))
    for _ in range(99):
        assert not miner.observe(["e0"], torch.full((1, 7), 0.69)).any()
    assert _ranks(miner) == list(range(18, 25))


@pytest.mark.parametrize("s_init,s_cur,expected", [
    (0.95, 0.79, True), (0.95, 0.80, False),   # |S_cur| boundary through the miner
    (0.60, 0.52, True), (0.60, 0.53, False),   # 1.15·S_cur just below / above S_init
])
def test_check_through_the_miner(s_init, s_cur, expected):
    miner = _build(interval=2)
    miner.observe(["e0"], torch.full((1, 7), s_init))
    mask = miner.observe(["e0"], torch.full((1, 7), s_cur))
    assert mask.all().item() is expected and (mask.any().item() is expected)
    assert _ranks(miner) == (list(range(18, 25)) if expected else list(range(11, 18)))


def test_examples_outside_the_batch_are_remined_at_the_check_too():
    miner = _build(interval=3)
    miner.observe(["e0", "e1"], torch.tensor([[0.6] * 7, [0.6] * 7]))
    miner.observe(["e1"], torch.full((1, 7), 0.5))
    mask = miner.observe(["e0"], torch.full((1, 7), 0.59))   # e0 is still hard; e1 is not
    assert mask.tolist() == [[False] * 7]
    assert _ranks(miner, "e1") == list(range(18, 25)) and _ranks(miner, "e0") == list(range(11, 18))
    assert miner.stats()["remined_examples_total"] == 1


def test_window_past_the_pool_end_wraps_and_counts():
    miner = _build(pool=_pool(cands=24), interval=1)          # 14 eligible candidates: 2 windows
    for k in range(3):
        miner.observe(["e0"], torch.full((1, 7), 0.6))
        miner.observe(["e0"], torch.full((1, 7), 0.6))       # S_cur = S_init: no re-mine
        assert miner.stats()["remined_examples_total"] == k
        miner.observe(["e0"], torch.full((1, 7), 0.3))       # after a fresh S_init of 0.6
    # k = 1 -> ranks 11..17, k = 2 -> 18..24, then past the end: k = 3 -> 11..17, k = 4 -> 18..24
    assert _ranks(miner) == list(range(18, 25))
    assert miner.stats()["exhausted_total"] == 2


def _reranker(calls):
    """A real re-ranking: the 'current model' prefers the candidates the offline pool ranked last."""
    def remine(ids):
        calls.append(list(ids))
        out = {}
        for eid in ids:
            i = int(eid[1:])
            out[eid] = [(f"{eid}-c{r}", f"text {i} {r}", 0.01 * r) for r in range(40, 0, -1)]
        return CandidatePool(out, positive_scores={eid: 1.0 for eid in ids})
    return remine


def test_remine_fn_reranks_with_the_current_model():
    calls: list = []
    miner = REGISTRIES["miners"].build({"type": "dynamic_v1", "interval": 2}, pool=_pool(),
                                       remine_fn=_reranker(calls))
    miner.observe(["e0"], torch.full((1, 7), 0.6))
    miner.observe(["e0"], torch.full((1, 7), 0.4))
    assert calls == [["e0"]]
    ids = [c.id for c in miner.negatives_for(["e0"])[0]]
    # re-ranked list is c40, c39, ...; the k = 2 window is its positions 17..23 -> c23 .. c17
    assert ids == [f"e0-c{r}" for r in range(23, 16, -1)]
    assert [c.rank for c in miner.negatives_for(["e0"])[0]] == list(range(18, 25))


def test_remine_fn_must_cover_the_ids():
    miner = REGISTRIES["miners"].build({"type": "dynamic_v1", "interval": 2}, pool=_pool(),
                                       remine_fn=lambda ids: {})
    miner.observe(["e0"], torch.full((1, 7), 0.6))
    with pytest.raises(ValueError, match="remine_fn"):
        miner.observe(["e0"], torch.full((1, 7), 0.4))


def _drive(miner, steps, seed, trace):
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        ids = rng.sample(sorted(miner.pool), 2)
        negs = miner.negatives_for(ids)
        scores = torch.rand(2, 7, generator=gen) * 0.8
        trace.append(([[c.id for c in row] for row in negs], miner.observe(ids, scores).tolist()))


@pytest.mark.parametrize("with_fn", [False, True])
def test_state_dict_round_trip_is_an_exact_resume(with_fn):
    pool = _pool(num_examples=4)

    def build():
        return REGISTRIES["miners"].build({"type": "dynamic_v1", "interval": 3}, pool=pool,
                                          remine_fn=_reranker([]) if with_fn else None)

    full, trace_full = build(), []
    _drive(full, 30, 1, trace_full)
    _drive(full, 30, 2, trace_full)
    first, trace = build(), []
    _drive(first, 30, 1, trace)
    resumed = build()
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    _drive(resumed, 30, 2, trace)
    assert trace == trace_full
    assert resumed.state_dict() == full.state_dict()
    assert full.stats()["remined_examples_total"] > 3


def test_defaults_are_the_paper_values():
    conf = DynamicV1Miner.Config()
    assert (conf.interval, conf.decay_ratio, conf.max_abs_score, conf.rank_start) == (100, 1.15, 0.8, 10)
