"""The real demo corpus: deterministic, valid shards, held-out split disjoint from training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conan_core.data.clr import PAPER_LANG_SHARES, read_pairs
from conan_core.data.demo import NUM_NEGATIVES, build_demo, in_eval
from conan_core.data.demo_cldr import cldr_items
from conan_core.data.shards import check_shards, read_manifest
from conan_core.tokenizer.text import iter_shard_dir

SCALE = 0.1


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "data"
    summary = build_demo(out, seed=0, scale=SCALE)
    return out, summary


def _texts(directory: Path) -> list[dict]:
    return list(iter_shard_dir(directory))


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_layout_and_valid_shards(demo):
    out, summary = demo
    kinds = {"pretrain": "text", "sft": "pairs", "supervised": "pairs", "sts": "sts"}
    for split, kind in kinds.items():
        manifest = read_manifest(out / split)
        assert manifest.kind == kind and manifest.count > 0
        assert check_shards(out / split) == []
        assert summary[split]["count"] == manifest.count
    for name in ("retrieval", "cross_lingual"):
        for f in ("queries.jsonl", "corpus.jsonl", "qrels.jsonl"):
            assert (out / "eval" / name / f).is_file()
    assert json.loads((out / "demo_summary.json").read_text())["pretrain"] == summary["pretrain"]


def test_eval_files_load_with_the_evaluators_readers(demo):
    from conan_core.eval.data import load_classification, load_retrieval, load_sts

    out, summary = demo
    ret = load_retrieval(out / "eval" / "retrieval")
    xl = load_retrieval(out / "eval" / "cross_lingual", task="cross_lingual")
    assert len(ret) == summary["eval"]["retrieval"]["queries"] > 10
    assert len(set(xl.query_langs)) >= 10 and "en" not in xl.query_langs
    sts = load_sts(out / "eval" / "sts.jsonl")
    assert {0.0, 1.0, 2.0, 5.0} <= set(sts.scores)
    cls = load_classification(out / "eval" / "classification.jsonl")
    assert len(cls.label_names) >= 8


def test_supervised_pairs_have_hard_negatives(demo):
    out, summary = demo
    pairs = list(read_pairs(out / "supervised"))
    assert {p["task"] for p in pairs} == {"retrieval", "clr", "classification"}
    for p in pairs:
        assert len(p["neg"]) == NUM_NEGATIVES, p["id"]
        assert p["pos"] not in p["neg"] and len(set(p["neg"])) == NUM_NEGATIVES
    sft = list(read_pairs(out / "sft"))
    assert all(p["task"] == "sft" and p["neg"] == [] and p["query"].startswith(p["instruction"]) for p in sft)
    assert summary["supervised"]["tasks"] == {t: sum(p["task"] == t for p in pairs)
                                              for t in ("classification", "clr", "retrieval")}


def test_clr_queries_are_real_translations_and_documents_stay_english(demo):
    out, _ = demo
    names = {it.key: it for it in cldr_items(PAPER_LANG_SHARES)}
    clr = [p for p in read_pairs(out / "supervised") if p["task"] == "clr"]
    assert len({p["lang"] for p in clr}) >= 10
    for p in clr:
        key = p["id"].split(":", 1)[1]
        item = names[key]
        assert p["query"] == item.names[p["lang"]]  # the CLDR name in the target language
        assert p["pos"] == item.doc and p["src_lang"] == "en"  # the English record is untouched


def test_held_out_split_is_disjoint(demo):
    out, _ = demo
    train_texts: set[str] = set()
    train_queries: set[str] = set()
    for s in _texts(out / "pretrain"):
        train_texts.add(s["text"])
    for split in ("sft", "supervised"):
        for p in read_pairs(out / split):
            train_queries.add(p["query"])
            train_texts.update([p["query"], p["pos"], *p["neg"]])
    train_sts = {(s["s1"], s["s2"]) for s in _texts(out / "sts")}
    parallel = {r["text"] for r in _jsonl(out / "parallel.jsonl")} | {r["en"] for r in _jsonl(out / "parallel.jsonl")}
    for name in ("retrieval", "cross_lingual"):
        corpus = _jsonl(out / "eval" / name / "corpus.jsonl")
        queries = _jsonl(out / "eval" / name / "queries.jsonl")
        assert not {d["text"] for d in corpus} & train_texts, name
        assert not {q["text"] for q in queries} & train_queries, name
        assert not {q["text"] for q in queries} & train_texts, name
        qrels = _jsonl(out / "eval" / name / "qrels.jsonl")
        assert {r["qid"] for r in qrels} == {q["id"] for q in queries}
        assert {r["doc_id"] for r in qrels} <= {d["id"] for d in corpus}
    xq = _jsonl(out / "eval" / "cross_lingual" / "queries.jsonl")
    assert not {q["text"] for q in xq} & parallel
    eval_sts = {(s["s1"], s["s2"]) for s in _jsonl(out / "eval" / "sts.jsonl")}
    assert not eval_sts & train_sts and not {(b, a) for a, b in eval_sts} & train_sts
    cls = _jsonl(out / "eval" / "classification.jsonl")
    assert not {c["text"] for c in cls} & train_texts
    # by source item: ids of eval entries are held out by the hash rule, training ids are not
    for q in _jsonl(out / "eval" / "retrieval" / "queries.jsonl"):
        assert in_eval("py:" + q["id"][2:], 0, 0.15)
    for p in read_pairs(out / "supervised"):
        if p["task"] == "retrieval":
            assert not in_eval("py:" + p["id"].split(":", 1)[1], 0, 0.15)


def test_deterministic_build(demo, tmp_path):
    out, summary = demo
    again = build_demo(tmp_path / "again", seed=0, scale=SCALE)
    for split in ("pretrain", "sft", "supervised", "sts"):
        a, b = read_manifest(out / split), read_manifest(tmp_path / "again" / split)
        assert [s.sha256 for s in a.shards] == [s.sha256 for s in b.shards], split
    for f in sorted((out / "eval").rglob("*.jsonl")):
        assert f.read_bytes() == (tmp_path / "again" / f.relative_to(out)).read_bytes(), f
    assert (out / "demo_summary.json").read_bytes() == (tmp_path / "again" / "demo_summary.json").read_bytes()
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in summary.items() if k != "seconds"}


def test_scale_multiplies_counts(demo):
    _, summary = demo
    from conan_core.data.demo import SIZES

    expected = sum(max(1, round(SIZES[k] * SCALE)) for k in SIZES if k.startswith("pretrain_"))
    assert summary["pretrain"]["count"] == expected
    assert summary["sts"]["count"] == 5 * max(1, round(SIZES["sts_level"] * SCALE))


def test_cli(tmp_path, capsys):
    import argparse

    from conan_core.commands.data_demo import add_data_commands

    parser = argparse.ArgumentParser()
    add_data_commands(parser.add_subparsers(dest="data_command"))
    args = parser.parse_args(["demo", "--out", str(tmp_path / "d"), "--scale", "0.05"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "pretrain:" in printed and "cross-lingual" in printed
    assert (tmp_path / "d" / "demo_summary.json").is_file()
