"""pack: rows equal a plain reference on random documents; segment ids; padding; resume."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from conan_core.data.packing import pack
from conan_core.data.samples import DataError
from conan_core.data.shards import write_shards
from conan_core.registries import REGISTRIES
from conan_core.sources.reader import Map


def reference_rows(docs, seq_len, eos, pad, drop_last):
    """Straightforward reference: one flat list of (token, global doc index), cut every seq_len."""
    flat = [(t, d) for d, doc in enumerate(x for x in docs if x) for t in list(doc) + [eos]]
    rows = []
    for start in range(0, len(flat), seq_len):
        chunk = flat[start:start + seq_len]
        if len(chunk) < seq_len and drop_last:
            break
        first = chunk[0][1]
        ids = [t for t, _ in chunk] + [pad] * (seq_len - len(chunk))
        seg = [d - first for _, d in chunk] + [-1] * (seq_len - len(chunk))
        rows.append((ids, seg))
    return rows


@pytest.mark.parametrize("seed", range(6))
def test_pack_matches_the_reference_on_random_documents(seed):
    g = torch.Generator().manual_seed(seed)
    n_docs = int(torch.randint(1, 40, (1,), generator=g))
    lengths = torch.randint(0, 50, (n_docs,), generator=g).tolist()
    docs = [torch.randint(1, 1000, (n,), generator=g).tolist() for n in lengths]
    seq_len = int(torch.randint(1, 33, (1,), generator=g))
    for drop_last in (True, False):
        rows = list(pack(docs, seq_len, eos_id=0, drop_last=drop_last, pad_id=7))
        ref = reference_rows(docs, seq_len, 0, 7, drop_last)
        assert [(r[0].tolist(), r[1].tolist()) for r in rows] == ref
        for ids, seg in rows:
            assert ids.dtype == seg.dtype == torch.long and ids.shape == seg.shape == (seq_len,)


def test_round_trip_recovers_every_document_and_segments_split_at_eos():
    docs = [[5, 6, 7], [8], [9, 10, 11, 12, 13, 14, 15], [16, 17]]
    rows = list(pack(docs, 5, eos_id=0, drop_last=False, pad_id=99))
    flat = torch.cat([r[0][r[1] >= 0] for r in rows]).tolist()
    recovered, current = [], []
    for t in flat:
        if t == 0:
            recovered.append(current)
            current = []
        else:
            current.append(t)
    assert recovered == docs and current == []
    for ids, seg in rows:
        real = seg >= 0
        assert seg[0] == 0 and bool((seg[real].diff() >= 0).all())
        # a new segment starts right after an EOS and nowhere else
        starts = (seg[real].diff() == 1).nonzero().flatten() + 1
        assert all(ids[i - 1] == 0 for i in starts.tolist())
    assert rows[-1][1].tolist()[-1] == -1 and rows[-1][0].tolist()[-1] == 99


def test_inputs_are_checked():
    with pytest.raises(DataError, match="seq_len"):
        pack([], 0, eos_id=0)
    with pytest.raises(DataError, match="list of ints"):
        list(pack([["a"]], 4, eos_id=0))
    with pytest.raises(DataError, match="list of ints"):
        list(pack([[1.5, 2.0]], 4, eos_id=0))
    with pytest.raises(DataError, match="list of ints"):
        list(pack([b"\x01\x02"], 4, eos_id=0))
    with pytest.raises(DataError, match="negative token id"):
        list(pack([[1, -2]], 4, eos_id=0))
    packer = pack([[], {"input_ids": [3, 4]}, torch.tensor([5, 6])], 3, eos_id=1)
    assert [r[0].tolist() for r in packer] == [[3, 4, 1], [5, 6, 1]]
    assert packer.counters()["empty_docs"] == 1


def encode(sample):
    return [ord(c) for c in sample["text"]]


@pytest.mark.parametrize("k", [1, 9, 30])
def test_packing_a_source_resumes_exactly(tmp_path, k):
    write_shards(({"text": "w" * (i % 13 + 1) + str(i)} for i in range(80)), tmp_path, kind="text", shard_size=9)

    def make():
        source = REGISTRIES["sources"].build({"type": "text_shards", "path": str(tmp_path), "shuffle_buffer": 5,
                                              "loop": False}, seed=4)
        return pack(Map(source, encode), 11, eos_id=0, drop_last=False)
    ref = [(a.tolist(), b.tolist()) for a, b in make()]
    first = make()
    it = iter(first)
    head = [(a.tolist(), b.tolist()) for a, b in itertools.islice(it, k)]
    second = make()
    second.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert head + [(a.tolist(), b.tolist()) for a, b in second] == ref
    assert second.counters()["samples"] == 80
