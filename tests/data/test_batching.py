"""task_batches: every batch holds one task; sizes per task; resumable, also during the final flush."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import pytest

from conan_core.data.batching import task_batches
from conan_core.data.samples import DataError
from conan_core.data.shards import write_shards
from conan_core.registries import REGISTRIES

TASKS = ["retrieval", "clr", "classification", "sts"]


def pairs_source(tmp_path, n=61, **fields):
    samples = [{"query": f"q{i}", "pos": f"p{i}", "task": TASKS[i % 4]} for i in range(n)]
    write_shards(samples, tmp_path / "p", kind="pairs", shard_size=8)
    spec = {"type": "pair_shards", "path": str(tmp_path / "p"), "shuffle_buffer": 6, "loop": False, **fields}
    return REGISTRIES["sources"].build(spec, seed=2), samples


def test_batches_are_task_homogeneous_and_cover_every_sample_once(tmp_path):
    source, samples = pairs_source(tmp_path)
    sizes = {"retrieval": 4, "sts": 32, "*": 3}
    batches = list(task_batches(source, sizes))
    for batch in batches:
        assert len({s["task"] for s in batch}) == 1
        assert 1 <= len(batch) <= sizes.get(batch[0]["task"], 3)
    keys = [s["query"] for b in batches for s in b]
    assert sorted(keys) == sorted(s["query"] for s in samples)
    full = Counter(b[0]["task"] for b in batches if len(b) == sizes.get(b[0]["task"], 3))
    partial = Counter(b[0]["task"] for b in batches if len(b) < sizes.get(b[0]["task"], 3))
    assert all(v == 1 for v in partial.values())  # at most one partial batch per task, at the end
    assert full["retrieval"] >= 1


def test_drop_last_drops_and_counts_partial_batches(tmp_path):
    source, samples = pairs_source(tmp_path)
    batcher = task_batches(source, 4, drop_last=True)
    batches = list(batcher)
    assert all(len(b) == 4 for b in batches)
    assert batcher.counters()["dropped_samples"] == len(samples) - 4 * len(batches)


def test_resume_is_exact_including_the_flush(tmp_path):
    def make():
        return task_batches(pairs_source(tmp_path)[0], 4)
    ref = [[s["__key__"] for s in b] for b in make()]
    n_full = next(i for i, b in enumerate(ref) if len(b) < 4)  # the flush of partial batches starts here
    assert len(ref) - n_full >= 2
    for k in (1, 5, n_full + 1, len(ref) - 1):  # the last two stop inside the end-of-input flush
        first = make()
        it = iter(first)
        head = [[s["__key__"] for s in next(it)] for _ in range(k)]
        second = make()
        second.load_state_dict(json.loads(json.dumps(first.state_dict())))
        assert head + [[s["__key__"] for s in b] for b in second] == ref, k


def test_plain_batches_and_missing_task_field():
    items = [{"__key__": f"k{i}", "__url__": "u", "x": i} for i in range(7)]
    assert [[s["x"] for s in b] for b in task_batches(items, 3, key=None)] == [[0, 1, 2], [3, 4, 5], [6]]
    with pytest.raises(DataError, match="sample 'k0' of u has no 'task' field"):
        list(task_batches(items, 3))
    assert len(list(task_batches(items, 3, default="sts"))) == 3
    with pytest.raises(DataError, match="no batch size for task 'sts'"):
        list(task_batches(items, {"retrieval": 4}, default="sts"))
    with pytest.raises(DataError, match="cannot save its position"):
        task_batches(iter(items), 3, key=None).state_dict()


def test_infinite_source_keeps_batches_homogeneous(tmp_path):
    source, _ = pairs_source(tmp_path, loop=True)
    for batch in itertools.islice(task_batches(source, 5), 40):
        assert len(batch) == 5 and len({s["task"] for s in batch}) == 1
