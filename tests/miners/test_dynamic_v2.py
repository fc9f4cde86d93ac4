"""dynamic_v2: the RECIPE §4 v2 rule, its boundaries, replacement timing, exhaustion and resume."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from conan_core.errors import ConfigError
from conan_core.miners.dynamic_v2 import DynamicV2Miner, v2_should_replace
from conan_core.miners.pool import Candidate, CandidatePool
from conan_core.registries import REGISTRIES

NAN = float("nan")

# (S_0 or None when the negative is seen for the first time, S_i, replace?)
RULE_TABLE = [
    (None, 0.39, True),    # never hard: S_0 < 0.4
    (None, 0.40, False),   # S_0 = 0.40 is not < 0.4
    (None, -0.20, True),
    (None, 0.95, False),
    (0.39, 0.90, True),    # stored S_0 below 0.4 (pure rule)
    (0.40, 0.40, False),
    (0.60, 0.49, True),    # 1.2·0.49 = 0.588 < 0.60 (just below) and 0.49 < 0.7
    (0.60, 0.50, False),   # 1.2·0.50 = 0.60, not < 0.60 (equality is not strict)
    (0.60, 0.51, False),   # 1.2·0.51 = 0.612 > 0.60 (just above)
    (0.90, 0.69, True),    # 0.828 < 0.90 and S_i = 0.69 < 0.7
    (0.90, 0.70, False),   # S_i = 0.70 is not < 0.7: still hard
    (0.90, 0.71, False),
    (0.95, 0.6999, True),
    (0.80, 0.30, True),
    (0.50, NAN, False),    # non-finite scores never replace
    (None, NAN, False),
    (0.50, float("-inf"), False),
]


@pytest.mark.parametrize("s0,s,expected", RULE_TABLE)
def test_rule_table(s0, s, expected):
    got = v2_should_replace(torch.tensor([NAN if s0 is None else s0]), torch.tensor([s]))
    assert got.dtype == torch.bool and got.tolist() == [expected]


def _rule64(s0: float, s: float) -> bool:
    s0 = s if math.isnan(s0) else s0
    return s0 < 0.4 or (1.2 * s < s0 and s < 0.7)


def test_rule_matches_float64_reference_on_random_scores():
    gen = torch.Generator().manual_seed(1234)
    s0 = torch.rand(20000, generator=gen) * 2 - 1
    s0[torch.rand(20000, generator=gen) < 0.2] = NAN
    s = torch.rand(20000, generator=gen) * 2 - 1
    got = v2_should_replace(s0, s).tolist()
    checked = 0
    for a, b, g in zip(s0.double().tolist(), s.double().tolist(), got):
        first = a if not math.isnan(a) else b
        # float32 vs float64 can only differ within rounding of a threshold
        if min(abs(first - 0.4), abs(1.2 * b - first), abs(b - 0.7)) < 1e-6:
            continue
        assert g == _rule64(a, b), (a, b)
        checked += 1
    assert checked > 19000


def _miner(cands: int = 10, n: int = 2, **fields) -> DynamicV2Miner:
    pool = {"e": [(f"c{i}", f"text {i}", 0.9 - 0.01 * i) for i in range(cands)]}
    spec = {"type": "dynamic_v2", "rank_start": 0, "relative_margin": None, **fields}
    return REGISTRIES["miners"].build(spec, pool=pool, num_negatives=n)


def _ids(miner, eid="e"):
    return [c.id for c in miner.negatives_for([eid])[0]]


# step-by-step: (negatives in use at this step, scores observed, replaced mask)
SEQUENCE = [
    (["c0", "c1"], [0.39, 0.40], [True, False]),   # c0 never hard; c1 enters with S_0 = 0.40
    (["c2", "c1"], [0.80, 0.35], [False, False]),  # c2 enters (S_0 0.80); 1.2·0.35 = 0.42 >= 0.40
    (["c2", "c1"], [0.69, 0.30], [False, True]),   # 0.828 >= 0.80; c1: 0.36 < 0.40 and 0.30 < 0.7
    (["c2", "c3"], [0.66, 0.75], [True, False]),   # c2: 0.792 < 0.80 and 0.66 < 0.7; c3 enters at 0.75
    (["c4", "c3"], [0.50, 0.70], [False, False]),  # c4 enters at 0.50; c3: 0.84 >= 0.75
    (["c4", "c3"], [0.41, 0.62], [True, True]),    # c4: 0.492 < 0.50; c3: 0.744 < 0.75 and 0.62 < 0.7
]


def test_sequence_table_replacement_visible_from_next_step():
    miner = _miner()
    for step, (negs, scores, expected) in enumerate(SEQUENCE):
        assert _ids(miner) == negs, f"step {step}"
        assert _ids(miner) == negs, f"step {step}: negatives_for twice in a step must agree"
        mask = miner.observe(["e"], torch.tensor([scores]))
        assert mask.tolist() == [expected], f"step {step}"
    assert _ids(miner) == ["c5", "c6"]
    st = miner.stats()
    assert st["replaced_total"] == 5 and st["observe_calls_total"] == len(SEQUENCE)
    assert st["exhausted_total"] == 0


def test_lists_returned_for_a_step_are_not_mutated_by_observe():
    miner = _miner()
    before = miner.negatives_for(["e"])
    miner.observe(["e"], torch.tensor([[0.1, 0.1]]))
    assert [c.id for c in before[0]] == ["c0", "c1"]
    assert _ids(miner) == ["c2", "c3"]


def test_exhaustion_wraps_to_the_candidate_retired_longest_ago():
    miner = _miner(cands=3, n=2)
    assert _ids(miner) == ["c0", "c1"]
    miner.observe(["e"], torch.tensor([[0.1, 0.9]]))   # c0 out, c2 (last unused) in
    assert _ids(miner) == ["c2", "c1"]
    miner.observe(["e"], torch.tensor([[0.9, 0.1]]))   # S_0 of c2 = 0.9; c1 out (S_0 0.9 -> 0.1)
    assert _ids(miner) == ["c2", "c0"]                 # pool used up: c0 retired longest ago
    assert miner.stats()["exhausted_total"] == 1
    miner.observe(["e"], torch.tensor([[0.1, 0.1]]))   # both replaced: c1 then c2 come back
    assert _ids(miner) == ["c1", "c2"]
    assert miner.stats()["exhausted_total"] == 3
    assert len(miner.negatives_for(["e"])[0]) == 2


def test_short_pool_repeats_to_exactly_n():
    miner = _miner(cands=1, n=3)
    assert _ids(miner) == ["c0", "c0", "c0"]
    assert miner.stats()["short_pools"] == 1


def test_duplicate_example_in_a_batch_is_decided_by_its_first_row():
    miner = _miner()
    mask = miner.observe(["e", "e"], torch.tensor([[0.1, 0.9], [0.9, 0.1]]))
    assert mask.tolist() == [[True, False], [False, False]]
    assert _ids(miner) == ["c2", "c1"]


def test_rank_start_skips_the_top_candidates_by_default():
    pool = {"e": [(f"c{i}", f"text {i}", 0.5) for i in range(30)]}
    miner = REGISTRIES["miners"].build({"type": "dynamic_v2"}, pool=pool)
    negs = miner.negatives_for(["e"])[0]
    assert [c.rank for c in negs] == list(range(11, 18))
    miner.observe(["e"], torch.full((1, 7), 0.3))
    assert [c.rank for c in miner.negatives_for(["e"])[0]] == list(range(18, 25))


def test_thresholds_are_config_fields_with_paper_defaults_and_constraints():
    conf = DynamicV2Miner.Config()
    assert (conf.never_hard, conf.decay_ratio, conf.still_hard, conf.rank_start) == (0.4, 1.2, 0.7, 10)
    assert REGISTRIES["miners"].build({"type": "dynamic_v2"}, pool={"e": ["x"] * 20}).num_negatives == 7
    with pytest.raises(ConfigError, match="never_hard"):
        REGISTRIES["miners"].build({"type": "dynamic_v2", "never_hard": 1.5}, pool={"e": ["x"]})
    miner = _miner(never_hard=0.2)
    assert miner.observe(["e"], torch.tensor([[0.3, 0.1]])).tolist() == [[False, True]]


def test_observe_rejects_wrong_shapes():
    miner = _miner()
    with pytest.raises(ValueError, match="expected"):
        miner.observe(["e"], torch.zeros(1, 3))


def _random_pool(num_examples=6, cands=30, seed=0):
    rng = random.Random(seed)
    return {f"q{i}": [(f"d{i}-{j}", f"doc {i} {j}", rng.uniform(-0.2, 0.9)) for j in range(cands)]
            for i in range(num_examples)}


def _drive(miner, steps, seed, trace):
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        ids = rng.sample(sorted(miner.pool), 3)
        negs = miner.negatives_for(ids)
        scores = torch.rand(3, miner.num_negatives, generator=gen) * 1.2 - 0.2
        mask = miner.observe(ids, scores)
        trace.append(([[c.id for c in row] for row in negs], mask.tolist()))
        miner.reset_step_stats()


def test_state_dict_round_trip_is_an_exact_resume():
    spec = {"type": "dynamic_v2", "rank_start": 2, "selection": "shuffled"}
    runtime = {"num_negatives": 4, "seed": 3}
    pool = CandidatePool(_random_pool(), positive_scores={f"q{i}": 0.95 for i in range(6)})
    full = REGISTRIES["miners"].build(spec, pool=pool, **runtime)
    trace_full: list = []
    _drive(full, 20, seed=7, trace=trace_full)
    _drive(full, 20, seed=8, trace=trace_full)

    first = REGISTRIES["miners"].build(spec, pool=pool, **runtime)
    trace: list = []
    _drive(first, 20, seed=7, trace=trace)
    state = json.loads(json.dumps(first.state_dict()))  # JSON-serialisable
    resumed = REGISTRIES["miners"].build(spec, pool=pool, **runtime)
    resumed.load_state_dict(state)
    _drive(resumed, 20, seed=8, trace=trace)
    assert trace == trace_full
    assert resumed.stats() == full.stats()
    assert resumed.state_dict() == full.state_dict()
    assert full.stats()["replaced_total"] > 10 and full.stats()["exhausted_total"] > 0


def test_state_of_another_config_is_refused():
    miner = _miner()
    miner.negatives_for(["e"])
    other = _miner(n=3)
    with pytest.raises(ValueError, match="num_negatives"):
        other.load_state_dict(miner.state_dict())


def test_shuffled_selection_is_deterministic_under_seed_and_order_independent():
    pool = _random_pool(num_examples=3, cands=40)
    spec = {"type": "dynamic_v2", "selection": "shuffled"}

    def negs(seed, order):
        m = REGISTRIES["miners"].build(spec, pool=pool, seed=seed)
        out = {eid: [c.id for c in m.negatives_for([eid])[0]] for eid in order}
        return out

    a = negs(11, ["q0", "q1", "q2"])
    assert a == negs(11, ["q2", "q0", "q1"])
    assert a != negs(12, ["q0", "q1", "q2"])
    ranked = REGISTRIES["miners"].build({"type": "dynamic_v2"}, pool=pool)
    assert a["q0"] != [c.id for c in ranked.negatives_for(["q0"])[0]]
    # shuffling never brings back a top-10 candidate
    assert all(int(cid.split("-")[1]) >= 10 for ids in a.values() for cid in ids)


def test_pool_candidates_given_as_candidate_objects():
    pool = {"e": [Candidate(f"c{i}", f"t{i}", 0.5, 0) for i in range(12)]}
    miner = REGISTRIES["miners"].build({"type": "dynamic_v2"}, pool=pool, num_negatives=2)
    assert [c.id for c in miner.negatives_for(["e"])[0]] == ["c10", "c11"]
