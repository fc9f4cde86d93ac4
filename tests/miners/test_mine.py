"""Offline mining (mine_pool) and the `conan mine` command, with a real hashing bag-of-words encoder."""

from __future__ import annotations

import argparse
import hashlib
import json
import re

import numpy as np
import pytest

from conan_core.commands.mine import add_commands, read_corpus, read_queries, run_mine
from conan_core.errors import ConanError
from conan_core.miners.mining import mine_pool
from conan_core.miners.pool import CandidatePool, normalize_text

DIM = 64


def hashing_encoder(texts: list[str]) -> np.ndarray:
    """Signed feature hashing of lower-cased words: a deterministic (if weak) text encoder."""
    out = np.zeros((len(texts), DIM), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in re.findall(r"\w+", text.lower()):
            h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
            out[row, h % DIM] += 1.0 if (h >> 32) & 1 else -1.0
    return out


TOPICS = ["river bank water flow", "stock market price trade", "football goal match team",
          "violin music concert orchestra", "volcano lava eruption ash", "compiler code parser syntax"]


def _data(seed=0):
    rng = np.random.default_rng(seed)
    vocab = " ".join(TOPICS).split() + [f"filler{i}" for i in range(30)]
    queries, positives, corpus = {}, {}, {}
    for i, topic in enumerate(TOPICS):
        words = topic.split()
        queries[f"q{i}"] = f"what about {words[0]} {words[1]}"
        positives[f"q{i}"] = f"The {topic} explained in Detail"
        corpus[f"pos{i}"] = positives[f"q{i}"]
        corpus[f"var{i}"] = "  " + positives[f"q{i}"].upper().replace(" ", "   ") + " "   # a false negative
    for j in range(60):
        corpus[f"d{j}"] = " ".join(rng.choice(vocab, size=6))
    return queries, positives, corpus


def _reference_pool(queries, positives, corpus, top_k, k_search):
    """float64 reference: cosine ranking, then the positives' duplicates removed."""
    ids, texts = list(corpus), list(corpus.values())

    def unit(x):
        x = x.astype(np.float64)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    docs = unit(hashing_encoder(texts))
    out, excluded = {}, 0
    for qid, q in queries.items():
        sims = docs @ unit(hashing_encoder([q]))[0]
        order = np.argsort(-sims, kind="stable")[:k_search]
        banned = {normalize_text(positives[qid])}
        kept = []
        for d in order:
            if len(kept) == top_k:
                break  # a duplicate ranked below the kept list would not have been mined: not counted
            if normalize_text(texts[d]) in banned:
                excluded += 1
            else:
                kept.append((ids[d], sims[d]))
        out[qid] = kept
    return out, excluded


@pytest.mark.parametrize("index_kind", ["flat", "torch"])
def test_mine_pool_matches_float64_reference_and_excludes_positives(index_kind):
    queries, positives, corpus = _data()
    pool = mine_pool(hashing_encoder, queries, positives, corpus, 10, index_kind=index_kind)
    ref, excluded = _reference_pool(queries, positives, corpus, 10, 10 + 1 + 16)
    assert set(pool) == set(queries)
    for qid in queries:
        cands = pool[qid]
        assert [c.rank for c in cands] == list(range(1, 11))
        assert all(normalize_text(c.text) != normalize_text(positives[qid]) for c in cands)
        np.testing.assert_allclose([c.score for c in cands], [s for _, s in ref[qid]], atol=1e-5)
        # same documents where the reference scores are not near-tied
        gaps = np.diff([s for _, s in ref[qid]])
        if np.all(np.abs(gaps) > 1e-5):
            assert [c.id for c in cands] == [i for i, _ in ref[qid]]
        assert pool.positive_texts(qid) == (positives[qid],)
        q, p = hashing_encoder([queries[qid], positives[qid]]).astype(np.float64)
        assert abs(pool.positive_score(qid) - q @ p / np.linalg.norm(q) / np.linalg.norm(p)) < 1e-5
        assert pool.query(qid) == queries[qid]
    assert pool.meta["excluded_false_negatives"] == excluded
    assert excluded >= len(queries)   # positives and their case/whitespace variants rank high


def test_mine_pool_without_exclusion_keeps_the_positive_and_list_corpus():
    queries, positives, corpus = _data()
    keep = mine_pool(hashing_encoder, queries, positives, list(corpus.values()), 10, exclude_positives=False)
    drop = mine_pool(hashing_encoder, queries, positives, list(corpus.values()), 10)
    assert keep.meta["excluded_false_negatives"] == 0 and keep["q0"][0].id.isdigit()
    found = 0
    for qid in queries:
        banned = normalize_text(positives[qid])
        kept = [c.score for c in keep[qid] if normalize_text(c.text) != banned]
        found += len(keep[qid]) - len(kept)
        # the same ranking minus the positives (compared by score: this encoder makes exact ties)
        np.testing.assert_allclose([c.score for c in drop[qid]][:len(kept)], kept, atol=1e-6)
    assert found == drop.meta["excluded_false_negatives"] > 0


def test_mine_pool_feeds_a_miner_that_never_returns_the_positive():
    from conan_core.registries import REGISTRIES

    queries, positives, corpus = _data()
    pool = mine_pool(hashing_encoder, queries, positives, corpus, 30, index_kind="torch")
    miner = REGISTRIES["miners"].build({"type": "static", "rank_start": 0, "relative_margin": None}, pool=pool)
    for row, qid in zip(miner.negatives_for(list(queries)), queries):
        assert len(row) == 7 and normalize_text(positives[qid]) not in {normalize_text(c.text) for c in row}


def _parse(argv):
    parser = argparse.ArgumentParser(prog="conan")
    add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_mine_command_with_jsonl_inputs(tmp_path, capsys):
    queries, positives, corpus = _data()
    qfile = _write_jsonl(tmp_path / "pairs.jsonl",
                         [{"id": q, "query": queries[q], "pos": positives[q]} for q in queries])
    cfile = _write_jsonl(tmp_path / "corpus.jsonl", [{"id": d, "text": t} for d, t in corpus.items()])
    args = _parse(["mine", "--model", "hashing-bow", "--corpus", str(cfile), "--queries", str(qfile),
                   "--top-k", "10", "--out", str(tmp_path / "out"), "--no-progress", "--shard-size", "4"])
    assert args.func is run_mine
    assert run_mine(args, encode_fn=hashing_encoder) == 0
    assert "mined 6 queries" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["num_examples"] == 6 and len(manifest["shards"]) == 2
    assert manifest["meta"]["model"] == "hashing-bow" and manifest["meta"]["excluded_false_negatives"] >= 6
    loaded = CandidatePool.load(tmp_path / "out")
    direct = mine_pool(hashing_encoder, queries, positives, corpus, 10)
    for qid in queries:
        assert [c.id for c in loaded[qid]] == [c.id for c in direct[qid]]
        assert loaded.positive_texts(qid) == (positives[qid],)


def test_mine_command_with_conan_shards(tmp_path):
    from conan_core.data.shards import write_shards

    queries, positives, corpus = _data()
    write_shards([{"__key__": q, "query": queries[q], "pos": positives[q]} for q in queries],
                 tmp_path / "pairs", kind="pairs", shard_size=4)
    write_shards([{"__key__": d, "text": t} for d, t in corpus.items()], tmp_path / "corpus", kind="text",
                 shard_size=25)
    assert read_queries(tmp_path / "pairs")[0] == queries
    assert read_corpus(tmp_path / "corpus") == corpus
    args = _parse(["mine", "--model", "m", "--corpus", str(tmp_path / "corpus"), "--queries",
                   str(tmp_path / "pairs"), "--top-k", "5", "--out", str(tmp_path / "out"), "--index", "torch",
                   "--no-progress"])
    assert run_mine(args, encode_fn=hashing_encoder) == 0
    assert len(CandidatePool.load(tmp_path / "out")) == 6


def test_corpus_from_pair_records_is_deduplicated(tmp_path):
    rows = [{"query": "a", "pos": "shared passage", "neg": ["n1", "shared passage"]},
            {"query": "b", "pos": "shared passage"}]
    corpus = read_corpus(_write_jsonl(tmp_path / "p.jsonl", rows))
    assert corpus == {"L1:pos": "shared passage", "L1:neg0": "n1"}   # JSONL keys are L{line}


def test_bad_records_name_their_file_and_key(tmp_path):
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"query": "x", "pos": "y"}, {"query": "no positive"}])
    with pytest.raises(ConanError, match=r"bad.jsonl.*'L2'.*missing required field"):
        read_queries(bad)
    dup = _write_jsonl(tmp_path / "dup.jsonl", [{"id": "a", "query": "x", "pos": "y"},
                                                {"id": "a", "query": "z", "pos": "w"}])
    with pytest.raises(ConanError, match="duplicate example id"):
        read_queries(dup)
    with pytest.raises(ConanError, match="missing required field"):
        read_corpus(_write_jsonl(tmp_path / "c.jsonl", [{"body": "x"}]))
    with pytest.raises(ConanError, match="no such file"):
        read_corpus(tmp_path / "missing.jsonl")


def test_conan_cli_registers_mine():
    from conan_core.cli import build_parser

    args = build_parser().parse_args(["mine", "--model", "m", "--corpus", "c", "--queries", "q", "--out", "o"])
    assert args.func is run_mine and args.top_k == 100 and args.index == "flat"
