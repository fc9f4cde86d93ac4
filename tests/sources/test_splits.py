"""Rank x worker splits form a partition of the samples; too few shards fail, never hang (RELIABILITY 18)."""

from __future__ import annotations

import pytest
from torch.utils.data import DataLoader

from conan_core.data.samples import DataError
from conan_core.registries import REGISTRIES
from conan_core.data.loader import ResumableLoader


def build(key: str, **fields):
    """A registered source from its key, config fields and runtime arguments in one call."""
    runtime = {k: fields.pop(k) for k in ("rank", "world_size", "seed") if k in fields}
    return REGISTRIES["sources"].build({"type": key, **fields}, **runtime)


def _ident(x):
    return x


def pieces(path, key, world_size, num_workers, **fields):
    """Keys read by each rank (one list per rank), each rank through a plain torch DataLoader."""
    out = []
    for rank in range(world_size):
        source = build(key, path=str(path), loop=False, shuffle_buffer=4, rank=rank, world_size=world_size,
                       seed=2, **fields)
        if num_workers:
            loader = DataLoader(source, batch_size=None, num_workers=num_workers, collate_fn=_ident)
        else:
            loader = source
        out.append([(s["__url__"], s["__key__"]) for s in loader])
    return out


def assert_partition(parts, expected):
    flat = [k for part in parts for k in part]
    assert len(flat) == len(set(flat)), "a sample was read twice"
    assert set(flat) == expected


@pytest.mark.parametrize("n_shards,per,world_size,num_workers,split", [
    (8, 24, 2, 2, "auto"),    # whole shards per piece
    (8, 24, 2, 2, "sample"),  # records modulo pieces
    (3, 10, 2, 1, "auto"),    # uneven shards per rank
    (1, 25, 1, 2, "auto"),    # one shard, two workers: falls back to records modulo pieces
    (3, 10, 2, 2, "auto"),    # fewer shards than pieces
])
def test_ranks_and_workers_partition_the_samples(sets, tmp_path, n_shards, per, world_size, num_workers, split):
    path = sets.text(tmp_path / "t", n_shards, per)
    expected = {(str(path / f"shard-{s:05d}.tar"), f"s{s:03d}_{i:04d}") for s in range(n_shards)
                for i in range(per)}
    parts = pieces(path, "text_shards", world_size, num_workers, split=split)
    assert_partition(parts, expected)
    if split == "sample" or n_shards < world_size * max(1, num_workers):
        sizes = [len(p) for p in parts]
        assert max(sizes) - min(sizes) <= max(1, num_workers)  # balanced to one record per piece


def test_pairs_partition_with_task_filter_and_two_workers(sets, tmp_path):
    path = sets.pairs(tmp_path / "p", 60, 7)
    parts = pieces(path, "pair_shards", 2, 2, tasks=["retrieval"])
    flat = [k for p in parts for k in p]
    assert len(flat) == len(set(flat)) == 20


def test_partition_holds_in_every_epoch_of_a_looping_source(sets, tmp_path):
    path = sets.text(tmp_path / "t", 5, 6)
    per_rank = []
    for rank in range(2):
        source = build("text_shards", path=str(path), shuffle_buffer=3, rank=rank, world_size=2, seed=1,
                       split="sample")
        it = iter(source)
        per_rank.append([[next(it)["__key__"] for _ in range(15)] for _ in range(3)])
    for epoch in range(3):
        assert sorted(per_rank[0][epoch] + per_rank[1][epoch]) == sorted(f"s{s:03d}_{i:04d}" for s in range(5)
                                                                         for i in range(6))


def test_shard_split_with_too_few_shards_fails_fast_with_the_numbers(sets, tmp_path):
    path = sets.text(tmp_path / "t", 3, 4)
    with pytest.raises(DataError, match=r"needs >= world_size x num_workers shards \(have 3, need 4\)"):
        next(iter(build("text_shards", path=str(path), split="shard", rank=1, world_size=4)))
    loader = ResumableLoader(build("text_shards", path=str(path), split="shard", world_size=2), num_workers=2,
                             timeout=60)
    with pytest.raises(DataError, match=r"have 3, need 4"):
        next(iter(loader))
