"""Exact resume of sources and pipelines, with 0 and 2 DataLoader workers (RELIABILITY 1, 3, 7, 8)."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from conan_core.data.batching import task_batches
from conan_core.data.loader import Map, ResumableLoader
from conan_core.data.packing import PackedLMBatches
from conan_core.data.samples import DataError
from conan_core.registries import REGISTRIES


EPOCH = 8 * 24


def build(key: str, **fields):
    """A registered source from its key, config fields and runtime arguments in one call."""
    runtime = {k: fields.pop(k) for k in ("rank", "world_size", "seed") if k in fields}
    return REGISTRIES["sources"].build({"type": key, **fields}, **runtime)


def take(iterable, n):
    return list(itertools.islice(iterable, n))


def url_key(sample):
    return (sample["__url__"], sample["__key__"])


def roundtrip(state):
    return json.loads(json.dumps(state))  # states are plain JSON data


@pytest.mark.parametrize("k", [1, 77, EPOCH - 1, EPOCH, EPOCH + 1, 2 * EPOCH + 5])
def test_source_resume_is_exact_at_any_point(text8, k):
    total = 3 * EPOCH

    def make():
        return build("text_shards", path=str(text8), shuffle_buffer=16, seed=7)
    reference = make()
    ref = [url_key(s) for s in take(iter(reference), total)]
    assert len(set(ref[:EPOCH])) == EPOCH
    first = make()
    head = [url_key(s) for s in take(iter(first), k)]
    state = roundtrip(first.state_dict())
    second = make()
    second.load_state_dict(state)
    rest = [url_key(s) for s in take(iter(second), total - k)]
    assert head + rest == ref
    assert second.epoch == reference.epoch and second.counters() == reference.counters()


def tag(sample):
    """Runs in the workers: what a trainer logs per sample, plus the worker's torch seed."""
    return (sample["__url__"], sample["__key__"], torch.initial_seed())


def make_loader(path, num_workers, **fields):
    source = build("text_shards", path=str(path), shuffle_buffer=8, seed=11, **fields)
    return ResumableLoader(Map(source, tag), num_workers=num_workers, snapshot_every=5, seed=3)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_resume_is_exact(text8, num_workers):
    total = EPOCH + 40
    ref = take(make_loader(text8, num_workers), total)
    assert len({r[:2] for r in ref[:EPOCH]}) == EPOCH  # one epoch = every sample once
    for k in (1, EPOCH // 2 + 3, EPOCH):
        loader = make_loader(text8, num_workers)
        head = take(loader, k)
        state = roundtrip(loader.state_dict())
        resumed = make_loader(text8, num_workers)
        resumed.load_state_dict(state)
        assert head + take(resumed, total - k) == ref, k


def test_double_resume_with_workers(text8):
    total = 150
    ref = take(make_loader(text8, 2), total)
    loader = make_loader(text8, 2)
    got = take(loader, 31)
    for stop in (97, total):
        state = roundtrip(loader.state_dict())
        loader = make_loader(text8, 2)
        loader.load_state_dict(state)
        got += take(loader, stop - len(got))
    assert got == ref


def test_finite_loader_continues_with_the_next_epoch_after_resume(sets, tmp_path):
    path = sets.text(tmp_path / "t", 4, 10)
    first_pass = list(make_loader(path, 2, loop=False))
    assert len(first_pass) == 40 and len({r[:2] for r in first_pass}) == 40
    loader = make_loader(path, 2, loop=False)
    it = iter(loader)
    head = take(it, 25)
    state = loader.state_dict()
    del it
    resumed = make_loader(path, 2, loop=False)
    resumed.load_state_dict(state)
    assert head + list(resumed) == first_pass
    second_epoch = list(resumed)
    assert len(second_epoch) == 40 and second_epoch != first_pass
    assert resumed.counters()["samples"] == 80


def test_pipeline_of_task_batches_and_packing_resumes_exactly_with_workers(sets, tmp_path):
    text = sets.text(tmp_path / "t", 4, 12)
    pairs = sets.pairs(tmp_path / "p", 48, 6)

    def batches():
        source = build("pair_shards", path=str(pairs), shuffle_buffer=5, seed=1)
        return ResumableLoader(Map(task_batches(source, {"retrieval": 3, "*": 2}), keys_of), num_workers=2,
                               snapshot_every=3)

    def rows():  # the packer pretraining uses
        docs = Map(build("text_shards", path=str(text), shuffle_buffer=4, seed=5), char_ids)
        return ResumableLoader(Map(PackedLMBatches(docs, 2, 16), as_lists), num_workers=2, snapshot_every=4)

    for make, total, k in ((batches, 60, 23), (rows, 50, 17)):
        ref = take(make(), total)
        loader = make()
        head = take(loader, k)
        resumed = make()
        resumed.load_state_dict(roundtrip(loader.state_dict()))
        assert head + take(resumed, total - k) == ref


def keys_of(batch):
    return [(s["task"], s["__key__"]) for s in batch]


def char_ids(sample):
    return {"ids": [ord(c) for c in sample["text"]], "key": url_key(sample)}


def as_lists(batch):
    return (batch["input_ids"].tolist(), batch["segment_ids"].tolist(), batch["keys"])


def test_changed_num_workers_is_refused_naming_old_and_new(text8):
    loader = make_loader(text8, 2)
    take(loader, 10)
    state = loader.state_dict()
    with pytest.raises(DataError, match=r"num_workers: checkpoint 2, now 0"):
        make_loader(text8, 0).load_state_dict(state)
    inline = make_loader(text8, 0)
    take(inline, 3)
    source_state = inline.state_dict()["workers"][0]["snapshot"]
    plain = build("text_shards", path=str(text8), shuffle_buffer=8, seed=11)
    plain.load_state_dict(source_state["inner"])
    with pytest.raises(DataError, match=r"num_workers: checkpoint 1, now 2"):
        list(ResumableLoader(plain, num_workers=2))


def test_worker_seeds_and_order_do_not_depend_on_timing(text8):
    a = take(make_loader(text8, 2), 30)
    b = take(make_loader(text8, 2), 30)
    assert a == b
    seeds = {r[2] for r in a}
    assert len(seeds) == 2  # one torch seed per worker, reproduced by the seeded loader generator
