"""The real demo corpus: deterministic, valid shards, in-domain and out-of-domain held-out data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conan_core.data.clr import PAPER_LANG_SHARES, read_pairs
from conan_core.data.demo import NUM_NEGATIVES, OOD_DIR, build_demo, in_eval
from conan_core.data.demo_cldr import cldr_items
from conan_core.data.demo_sources import OOD_CATALOGS, OOD_DOC_PACKAGES, OOD_LANGS
from conan_core.data.shards import check_shards, read_manifest
from conan_core.tokenizer.text import iter_shard_dir

SCALE = 0.1
SPLITS = ("pretrain", "sft", "supervised", "sts")


@pytest.fixture(scope="module")
def again(tmp_path_factory):
    """The same build in another process with another PYTHONHASHSEED, started first so that it runs
    beside the in-process build; yields (directory, process)."""
    out = tmp_path_factory.mktemp("again") / "data"
    code = f"from conan_core.data.demo import build_demo; build_demo({str(out)!r}, seed=0, scale={SCALE})"
    proc = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ, PYTHONHASHSEED="12345"))
    yield out, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def demo(tmp_path_factory, again):
    out = tmp_path_factory.mktemp("demo") / "data"
    summary = build_demo(out, seed=0, scale=SCALE)
    return out, summary


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _training_samples(out: Path) -> dict[str, list[dict]]:
    return {split: list(iter_shard_dir(out / split)) for split in SPLITS}


def _training_texts(out: Path) -> list[str]:
    """Every text field of every sample of the four training splits, read back from the shards."""
    texts = []
    for samples in _training_samples(out).values():
        for s in samples:
            texts += [s[k] for k in ("text", "query", "pos", "s1", "s2") if isinstance(s.get(k), str)]
            texts += list(s.get("neg") or ())
    return texts


def test_layout_and_valid_shards(demo):
    out, summary = demo
    kinds = {"pretrain": "text", "sft": "pairs", "supervised": "pairs", "sts": "sts"}
    for split, kind in kinds.items():
        manifest = read_manifest(out / split)
        assert manifest.kind == kind and manifest.count > 0
        assert check_shards(out / split) == []
        assert summary[split]["count"] == manifest.count
    for root in (out / "eval", out / "eval" / OOD_DIR):
        for name in ("retrieval", "cross_lingual"):
            for f in ("queries.jsonl", "corpus.jsonl", "qrels.jsonl"):
                assert (root / name / f).is_file()
        assert (root / "sts.jsonl").is_file() and (root / "classification.jsonl").is_file()
    assert json.loads((out / "demo_summary.json").read_text())["pretrain"] == summary["pretrain"]


def test_corpus_reads_every_declared_source(demo):
    _, summary = demo
    src = summary["sources"]
    trained = set(src["docstrings"]["train"])
    assert {"stdlib", "torch", "transformers", "numpy", "pydantic", "babel"} <= trained
    assert not trained & {p.name for p in OOD_DOC_PACKAGES}
    assert {"torch", "Django", "matplotlib", "babel"} <= set(src["packages"])
    assert set(src["catalog_messages"]["train"]) == {"django/conf", "django/contrib/admin", "django/contrib/auth",
                                                      "django/contrib/contenttypes", "django/contrib/sessions",
                                                      "django/contrib/sites"}
    pre = summary["pretrain"]["sources"]
    assert pre["catalogs"] > 0 and pre["cldr_names"] > 0 and pre["docstrings:torch"] > 0
    assert summary["pretrain"]["langs"]["ja"] > 0 and summary["pretrain"]["count"] == sum(pre.values())
    assert summary["supervised"]["sources"]["catalogs"] > 0 and summary["supervised"]["sources"]["cldr"] > 0


def test_eval_files_load_with_the_evaluators_readers(demo):
    from conan_core.eval.data import load_classification, load_retrieval, load_sts

    out, summary = demo
    for domain, root in (("in_domain", out / "eval"), ("out_of_domain", out / "eval" / OOD_DIR)):
        ret = load_retrieval(root / "retrieval")
        xl = load_retrieval(root / "cross_lingual", task="cross_lingual")
        assert len(ret) == summary["eval"][domain]["retrieval"]["queries"] > 10
        assert len(set(xl.query_langs)) >= 10 and "en" not in xl.query_langs
        sts = load_sts(root / "sts.jsonl")
        assert {0.0, 1.0, 2.0, 5.0} <= set(sts.scores)
        cls = load_classification(root / "classification.jsonl")
        assert len(cls.label_names) >= 8
    xl = load_retrieval(out / "eval" / OOD_DIR / "cross_lingual", task="cross_lingual")
    assert set(OOD_LANGS) <= set(xl.query_langs)  # queries in languages no training split holds


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
    from conan_core.translators.gettext import GettextTranslator

    out, _ = demo
    names = {it.key: it for it in cldr_items(PAPER_LANG_SHARES)}
    catalogs = GettextTranslator(GettextTranslator.Config(exclude=list(OOD_CATALOGS)))
    clr = [p for p in read_pairs(out / "supervised") if p["task"] == "clr"]
    assert len({p["lang"] for p in clr}) >= 10
    kinds = set()
    for p in clr:
        key = p["id"].split(":", 1)[1]
        assert p["src_lang"] == "en"
        if key.startswith("message:"):  # a Django interface string: the catalog's translation
            kinds.add("message")
            assert p["lang"] != "en" and catalogs.translate([p["pos"]], "en", p["lang"]) == [p["query"]]
        else:
            kinds.add("cldr")
            item = names[key]
            assert p["query"] == item.names[p["lang"]]  # the CLDR name in the target language
            assert p["pos"] == item.doc  # the English record is untouched
    assert kinds == {"message", "cldr"}


def test_in_domain_held_out_items_are_disjoint(demo):
    out, _ = demo
    train_texts = set(_training_texts(out))
    train_queries = {p["query"] for split in ("sft", "supervised") for p in read_pairs(out / split)}
    train_sts = {(s["s1"], s["s2"]) for s in iter_shard_dir(out / "sts")}
    parallel = {t for r in _jsonl(out / "parallel.jsonl") for t in (r["text"], r["en"])}
    for name in ("retrieval", "cross_lingual"):
        corpus = _jsonl(out / "eval" / name / "corpus.jsonl")
        queries = _jsonl(out / "eval" / name / "queries.jsonl")
        assert not {d["text"] for d in corpus} & train_texts, name
        assert not {q["text"] for q in queries} & (train_queries | train_texts), name
        qrels = _jsonl(out / "eval" / name / "qrels.jsonl")
        assert {r["qid"] for r in qrels} == {q["id"] for q in queries}
        assert {r["doc_id"] for r in qrels} <= {d["id"] for d in corpus}
    xq = _jsonl(out / "eval" / "cross_lingual" / "queries.jsonl")
    assert not {q["text"] for q in xq} & parallel
    eval_sts = {(s["s1"], s["s2"]) for s in _jsonl(out / "eval" / "sts.jsonl")}
    assert not eval_sts & train_sts and not {(b, a) for a, b in eval_sts} & train_sts
    assert not {c["text"] for c in _jsonl(out / "eval" / "classification.jsonl")} & train_texts
    # by source item: ids of eval entries are held out by the hash rule, training ids are not
    for q in _jsonl(out / "eval" / "retrieval" / "queries.jsonl"):
        assert in_eval("py:" + q["id"][2:], 0, 0.15)
    for q in xq:
        key = q["id"].split(":", 2)[2]
        assert in_eval(("msg:" if key.startswith("message:") else "cldr:") + key, 0, 0.15)
    for p in read_pairs(out / "supervised"):
        if p["task"] == "retrieval":
            assert not in_eval("py:" + p["id"].split(":", 1)[1], 0, 0.15)


def test_no_out_of_domain_text_occurs_in_any_training_shard(demo):
    """Every query, document, STS sentence and classification text of the out-of-domain sets is
    absent from the four training splits, even as a part of a longer training text."""
    out, _ = demo
    blob = "\x00".join(_training_texts(out))
    ood = out / "eval" / OOD_DIR
    checked = 0
    for name in ("retrieval", "cross_lingual"):
        for f in ("queries.jsonl", "corpus.jsonl"):
            for row in _jsonl(ood / name / f):
                assert row["text"] not in blob, (name, f, row["id"])
                checked += 1
    for row in _jsonl(ood / "sts.jsonl"):
        assert row["s1"] not in blob and row["s2"] not in blob, row
        checked += 2
    for row in _jsonl(ood / "classification.jsonl"):
        assert row["text"] not in blob, row
        checked += 1
    assert checked > 300
    # whole sources are held out: no training sample comes from them
    held_packages = tuple(p.name + "." for p in OOD_DOC_PACKAGES)
    for q in _jsonl(ood / "retrieval" / "queries.jsonl"):
        assert q["id"][2:].startswith(held_packages)
    samples = _training_samples(out)
    for split in ("sft", "supervised"):
        for p in samples[split]:
            assert not p["id"].split(":", 1)[1].startswith(held_packages), p["id"]
            assert p["lang"] not in OOD_LANGS and "translate:" + OOD_LANGS[0] not in p["id"]


def test_summary_lists_held_out_sources(demo):
    _, summary = demo
    held = summary["held_out"]
    assert held["docstring_packages"] == [p.name for p in OOD_DOC_PACKAGES]
    assert held["catalogs"] == list(OOD_CATALOGS) and held["languages"] == list(OOD_LANGS)
    assert set(held["docstrings"]) == {"django", "matplotlib"} and sum(held["catalog_messages"].values()) > 50
    ev = summary["eval"]["out_of_domain"]
    assert ev["retrieval"]["queries"] > 10 and ev["cross_lingual"]["queries"] > 40
    assert set(OOD_LANGS) <= set(ev["cross_lingual"]["langs"])


def test_deterministic_build_independent_of_hash_seed(demo, again):
    out, _ = demo
    again, proc = again
    assert proc.wait(timeout=300) == 0
    for split in SPLITS:
        a, b = read_manifest(out / split), read_manifest(again / split)
        assert [s.sha256 for s in a.shards] == [s.sha256 for s in b.shards], split
    for f in sorted((out / "eval").rglob("*.jsonl")):
        assert f.read_bytes() == (again / f.relative_to(out)).read_bytes(), f
    assert (out / "demo_summary.json").read_bytes() == (again / "demo_summary.json").read_bytes()


def test_scale_multiplies_counts(demo):
    _, summary = demo
    from conan_core.data.demo import SIZES

    expected = sum(max(1, round(SIZES[k] * SCALE)) for k in SIZES if k.startswith("pretrain_"))
    assert summary["pretrain"]["count"] == expected
    assert summary["sts"]["count"] == 5 * max(1, round(SIZES["sts_level"] * SCALE))


def test_missing_source_package_is_a_clear_error():
    from conan_core.data.demo_python import DemoSourceError
    from conan_core.data.demo_sources import DocPackage, doc_items

    with pytest.raises(DemoSourceError, match=r"not-a-real-dist.*conan-core\[demo\]"):
        doc_items((DocPackage("not_a_real_package", "not-a-real-dist"),))
    with pytest.raises(DemoSourceError, match="differs from the one the demo corpus declares"):
        doc_items((DocPackage("tqdm", "tqdm", ("no_such_subpackage",)),))


def test_cli(tmp_path, capsys):
    import argparse

    from conan_core.commands.data_demo import add_data_commands

    parser = argparse.ArgumentParser()
    add_data_commands(parser.add_subparsers(dest="data_command"))
    args = parser.parse_args(["demo", "--out", str(tmp_path / "d"), "--scale", "0.05"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "pretrain:" in printed and "cross-lingual" in printed and "held out:" in printed
    assert (tmp_path / "d" / "demo_summary.json").is_file()
