"""MixedSource: weights respected, deterministic, resumable."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import pytest

from conan_core.data.mixing import MixedSource
from conan_core.data.samples import DataError
from conan_core.data.shards import write_shards
from conan_core.registries import REGISTRIES


def text_dir(tmp_path, name, n):
    write_shards(({"text": f"{name}{i}"} for i in range(n)), tmp_path / name, kind="text", shard_size=5)
    return str(tmp_path / name)


def sources(tmp_path, **fields):
    return [REGISTRIES["sources"].build({"type": "text_shards", "path": text_dir(tmp_path, name, n),
                                         "shuffle_buffer": 4, **fields}, seed=i)
            for i, (name, n) in enumerate((("a", 20), ("b", 10), ("c", 7)))]


def test_weights_are_respected_approximately(tmp_path):
    weights = [0.6, 0.3, 0.1]
    n = 4000
    got = Counter(s["text"][0] for s in itertools.islice(MixedSource(sources(tmp_path), weights, seed=1), n))
    for name, w in zip("abc", weights):
        # binomial standard deviation <= 0.008 at n=4000: 4 sigma
        assert abs(got[name] / n - w) < 0.032, got


def test_mix_is_deterministic_and_seeded(tmp_path):
    def run(seed):
        return [s["text"] for s in itertools.islice(MixedSource(sources(tmp_path), [1, 1, 1], seed=seed), 200)]
    assert run(3) == run(3)
    assert run(3) != run(4)


@pytest.mark.parametrize("k", [1, 37, 150])
def test_mix_resume_is_exact(tmp_path, k):
    def make():
        return MixedSource(sources(tmp_path), [0.5, 0.3, 0.2], seed=5)
    ref = [s["text"] for s in itertools.islice(make(), 300)]
    first = make()
    it = iter(first)
    head = [next(it)["text"] for _ in range(k)]
    state = json.loads(json.dumps(first.state_dict()))
    second = make()
    second.load_state_dict(state)
    assert head + [s["text"] for s in itertools.islice(second, 300 - k)] == ref
    assert first.counters()["samples"] == k and second.counters()["samples"] == 300


def test_finite_sources_stop_all_or_first(tmp_path):
    finite = sources(tmp_path, loop=False)
    got = [s["text"] for s in MixedSource(finite, [1, 1, 1], seed=0)]
    assert sorted(got) == sorted([f"a{i}" for i in range(20)] + [f"b{i}" for i in range(10)] +
                                 [f"c{i}" for i in range(7)])
    mix = MixedSource(sources(tmp_path, loop=False), [1, 1, 1], seed=0, stop="first")
    short = [s["text"] for s in mix]
    counts = Counter(t[0] for t in short)
    full = {"a": 20, "b": 10, "c": 7}
    assert len(short) < 37 and [n for n in "abc" if counts[n] == full[n]] != []  # one source ran out
    assert mix.counters()["from_source_0"] == counts["a"]


def test_bad_weights_are_rejected(tmp_path):
    with pytest.raises(DataError, match="one weight per source"):
        MixedSource(sources(tmp_path), [1, 2])
    with pytest.raises(DataError, match="positive sum"):
        MixedSource(sources(tmp_path), [0, 0, 0])
    with pytest.raises(DataError, match="positive sum"):
        MixedSource(sources(tmp_path), [1, -1, 1])
