"""CandidatePool: normalisation of inputs, save/load round trips, sha256 checks, bad rows."""

from __future__ import annotations

import json
import math

import pytest

from conan_core.miners.pool import Candidate, CandidatePool, PoolError, example_id_of, normalize_text


def _pool():
    return CandidatePool(
        {"q1": [("d1", "doc one", 0.8), ("d2", "doc two", float("nan")), "bare text"],
         "q2": {"candidates": [{"id": "d3", "text": "doc three", "score": 0.1}], "positive": ["p", "p2"],
                "positive_score": [0.9, 0.7], "query": "second query"}},
        positives={"q1": "positive one"}, positive_scores={"q1": 0.95}, queries={"q1": "first query"},
        meta={"top_k": 3})


def _same(a: CandidatePool, b: CandidatePool):
    assert list(a) == list(b)
    for eid in a:
        assert [(c.id, c.text, c.rank) for c in a[eid]] == [(c.id, c.text, c.rank) for c in b[eid]]
        for x, y in zip(a[eid], b[eid]):
            assert (math.isnan(x.score) and math.isnan(y.score)) or x.score == y.score
        assert a.positive_texts(eid) == b.positive_texts(eid)
        assert a.positive_scores(eid) == b.positive_scores(eid)
        assert a.query(eid) == b.query(eid)


def test_normalisation_and_accessors():
    pool = _pool()
    assert len(pool) == 2 and pool.num_candidates() == 4
    assert [c.rank for c in pool["q1"]] == [1, 2, 3]
    assert pool["q1"][2].text == "bare text" and math.isnan(pool["q1"][2].score)
    assert pool.positive_texts("q2") == ("p", "p2") and pool.positive_score("q2") == 0.7
    assert pool.query("q2") == "second query" and pool.positive_score("missing") is None
    assert CandidatePool.coerce(pool) is pool
    with pytest.raises(PoolError, match="candidate must be"):
        CandidatePool({"q": [42]})
    with pytest.raises(PoolError, match="expected a list"):
        CandidatePool({"q": "not a list"})


def test_directory_round_trip_with_manifest(tmp_path):
    pool = _pool()
    manifest = pool.save(tmp_path / "pool", shard_size=1)
    assert len(manifest["shards"]) == 2 and (tmp_path / "pool" / "manifest.json").exists()
    loaded = CandidatePool.load(tmp_path / "pool")
    _same(pool, loaded)
    assert loaded.meta["top_k"] == 3


def test_single_file_round_trip_and_sidecar(tmp_path):
    pool = _pool()
    path = tmp_path / "pool.jsonl"
    pool.save(path)
    assert (tmp_path / "pool.jsonl.sha256").exists()
    _same(pool, CandidatePool.load(path))
    first = json.loads(path.read_text().splitlines()[0])
    assert first["candidates"][1]["score"] is None   # NaN is written as null (strict JSON)


def test_sha256_mismatch_is_detected(tmp_path):
    _pool().save(tmp_path / "pool")
    shard = tmp_path / "pool" / "candidates-00000.jsonl"
    shard.write_text(shard.read_text().replace("doc one", "doc 0ne"))
    with pytest.raises(PoolError, match="sha256 mismatch"):
        CandidatePool.load(tmp_path / "pool")
    _pool().save(tmp_path / "one.jsonl")
    (tmp_path / "one.jsonl").write_text((tmp_path / "one.jsonl").read_text()[:-5])
    with pytest.raises(PoolError, match="sha256"):
        CandidatePool.load(tmp_path / "one.jsonl")


def test_bad_rows_raise_with_location_or_are_skipped_and_counted(tmp_path):
    path = tmp_path / "hand.jsonl"
    path.write_text("\n".join([
        json.dumps({"id": "a", "candidates": [{"id": "x", "text": "t", "score": 0.5}]}),
        json.dumps({"id": "b", "candidates": "nope"}),
        "{not json",
        json.dumps({"id": "c", "candidates": [["y", "u", 0.1]], "positive": "P"}),
        json.dumps({"id": "a", "candidates": []}),
    ]) + "\n")
    with pytest.raises(PoolError, match=r"hand.jsonl:2"):
        CandidatePool.load(path)
    pool = CandidatePool.load(path, on_error="skip")
    assert list(pool) == ["a", "c"] and pool.meta["skipped_rows"] == 3
    assert pool.positive_texts("c") == ("P",)


def test_missing_pool_and_foreign_manifest(tmp_path):
    with pytest.raises(PoolError, match="no such candidate pool"):
        CandidatePool.load(tmp_path / "nothing")
    (tmp_path / "d").mkdir()
    with pytest.raises(PoolError, match="no manifest.json"):
        CandidatePool.load(tmp_path / "d")
    (tmp_path / "d" / "manifest.json").write_text(json.dumps({"format": "conan-shards/1"}))
    with pytest.raises(PoolError, match="format"):
        CandidatePool.load(tmp_path / "d")


def test_rewrite_replaces_the_manifest_last(tmp_path):
    _pool().save(tmp_path / "p", shard_size=1)
    small = CandidatePool({"z": [("d", "t", 0.5)]})
    small.save(tmp_path / "p")
    assert list(CandidatePool.load(tmp_path / "p")) == ["z"]
    assert sorted(f.name for f in (tmp_path / "p").iterdir()) == ["candidates-00000.jsonl", "manifest.json"]


def test_helpers():
    assert normalize_text("  Hello\tWORLD \n") == "hello world"
    assert normalize_text("Ｆｕｌｌｗｉｄｔｈ") == "fullwidth"   # NFKC
    assert example_id_of({"id": "x", "__key__": "k"}, 3) == "x"
    assert example_id_of({"__key__": "k"}, 3) == "k"
    assert example_id_of({"query": "q"}, 3) == "3"


def test_toy_pool_is_deterministic():
    a, b = CandidatePool.toy(seed=1), CandidatePool.toy(seed=1)
    assert [c.score for c in a["ex0"]] == [c.score for c in b["ex0"]]
    assert all(x.score >= y.score for x, y in zip(a["ex0"], a["ex0"][1:]))
    assert isinstance(a["ex0"][0], Candidate)
