"""Evaluators on small hand-made sets with a deterministic bag-of-words encoder, against metrics
recomputed independently (brute-force numpy ranking + the per-query reference metric functions)."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from conan_core.errors import ConfigError
from conan_core.eval.bm25 import BM25Index, bm25_tokenize
from conan_core.eval.data import MissingEvalDataError, load_retrieval
from conan_core.eval.metrics import mrr_at_k, ndcg_at_k, recall_at_k
from conan_core.eval.report import evaluate_all, format_table, read_metrics, write_metrics
from conan_core.registries import REGISTRIES

DIM = 512


def bow_encode(texts: list[str]) -> np.ndarray:
    """Hashed bag of words (crc32 buckets): a real, deterministic encoder whose cosine rewards shared words."""
    out = np.zeros((len(texts), DIM), dtype=np.float32)
    for i, text in enumerate(texts):
        for tok in bm25_tokenize(text):
            out[i, zlib.crc32(tok.encode()) % DIM] += 1.0
    return out


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


CORPUS = {"d1": "the cat sat on the mat", "d2": "dogs bark at night", "d3": "a cat and a dog play",
          "d4": "stock markets fell sharply", "d5": "the night sky has stars", "d6": "le chat dort"}


@pytest.fixture()
def eval_root(tmp_path) -> Path:
    root = tmp_path / "data"
    queries = [{"id": "q1", "text": "cat on the mat", "lang": "en"}, {"id": "q2", "text": "bark night", "lang": "en"},
               {"id": "q3", "text": "markets", "lang": "en"}, {"id": "q4", "text": "stars", "lang": "en"},
               {"id": "q5", "text": "chat", "lang": "fr"}, {"id": "q6", "text": "dog play", "lang": "fr"}]
    qrels = [{"qid": "q1", "doc_id": "d1", "score": 2}, {"qid": "q1", "doc_id": "d3", "score": 1},
             {"qid": "q2", "doc_id": "d2", "score": 1}, {"qid": "q3", "doc_id": "d4", "score": 1},
             {"qid": "q5", "doc_id": "d6", "score": 1}, {"qid": "q6", "doc_id": "d3", "score": 1}]
    for task in ("retrieval", "cross_lingual"):
        write_jsonl(root / "eval" / task / "queries.jsonl", queries)
        write_jsonl(root / "eval" / task / "corpus.jsonl", [{"id": k, "text": v} for k, v in CORPUS.items()])
        write_jsonl(root / "eval" / task / "qrels.jsonl", qrels)
    write_jsonl(root / "eval" / "sts.jsonl", [
        {"s1": "a cat sat", "s2": "a cat sat", "score": 5}, {"s1": "a cat sat", "s2": "the cat slept", "score": 3},
        {"s1": "dogs bark", "s2": "dogs bark loudly", "score": 4}, {"s1": "stock markets", "s2": "night sky", "score": 0},
        {"s1": "red apple", "s2": "green apple", "score": 2}])
    write_jsonl(root / "eval" / "classification.jsonl", [
        {"text": "the cat purrs", "label": "cat"}, {"text": "a dog barks", "label": "dog"},
        {"text": "cat food", "label": "cat"}, {"text": "walk the dog", "label": "dog"},
        {"text": "a bird sings", "label": "bird"}, {"text": "sings like a bird", "label": "bird"}])
    return root


def reference_rankings(data, scores: np.ndarray) -> dict:
    order = np.argsort(-scores, axis=1, kind="stable")
    return {qid: [data.doc_ids[j] for j in row] for qid, row in zip(data.query_ids, order)}


def reference_metrics(rankings: dict, qrels: dict, names: dict[str, tuple]) -> dict:
    judged = [q for q, rel in qrels.items() if any(s > 0 for s in rel.values())]
    return {name: float(np.mean([fn(rankings[q], qrels[q], k) for q in judged])) for name, (fn, k) in names.items()}


def cosine_scores(queries: list[str], docs: list[str]) -> np.ndarray:
    q, d = bow_encode(queries).astype(np.float64), bow_encode(docs).astype(np.float64)
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    return q @ d.T


def test_retrieval_matches_independent_reference(eval_root):
    evaluator = REGISTRIES["evaluators"].build({"type": "retrieval"})
    res = evaluator.evaluate(bow_encode, eval_root)
    data = load_retrieval(eval_root)
    names = {"ndcg@10": (ndcg_at_k, 6), "recall@1": (recall_at_k, 1), "recall@10": (recall_at_k, 6),
             "recall@100": (recall_at_k, 6), "mrr@10": (mrr_at_k, 6)}
    model_ref = reference_metrics(reference_rankings(data, cosine_scores(data.query_texts, data.doc_texts)),
                                  data.qrels, names)
    bm25 = BM25Index(data.doc_texts)
    bm25_ref = reference_metrics(reference_rankings(data, np.stack([bm25.scores(q) for q in data.query_texts])),
                                 data.qrels, names)
    for name in names:
        assert res[name] == pytest.approx(model_ref[name], abs=1e-9), name
        assert res[f"bm25/{name}"] == pytest.approx(bm25_ref[name], abs=1e-9), name
    assert res["n_queries"] == 5 and res["n_docs"] == 6  # q4 has no qrels: not evaluated
    assert res["recall@1"] < res["recall@10"] <= 1.0 and res["mrr@10"] > 0.5
    # exact torch search gives the same numbers as the faiss flat index
    torch_res = REGISTRIES["evaluators"].build({"type": "retrieval", "index": "torch"}).evaluate(bow_encode, eval_root)
    assert torch_res == pytest.approx(res)
    # an object with .encode works as well as the bare function
    class WithEncode:
        def encode(self, texts):
            return bow_encode(texts)
    assert evaluator.evaluate(WithEncode(), data) == pytest.approx(res)
    no_bm25 = REGISTRIES["evaluators"].build({"type": "retrieval", "bm25": False}).evaluate(bow_encode, data)
    assert not any(k.startswith("bm25/") for k in no_bm25)


def test_retrieval_config_validation():
    with pytest.raises(ConfigError, match="recall_k"):
        REGISTRIES["evaluators"].build({"type": "retrieval", "recall_k": [0]})
    with pytest.raises(ConfigError):
        REGISTRIES["evaluators"].build({"type": "retrieval", "recal_k": [1]})


def test_cross_lingual_per_language_and_macro(eval_root):
    res = REGISTRIES["evaluators"].build({"type": "cross_lingual"}).evaluate(bow_encode, eval_root)
    data = load_retrieval(eval_root, "cross_lingual")
    rankings = reference_rankings(data, cosine_scores(data.query_texts, data.doc_texts))
    for lang, qids in (("en", ["q1", "q2", "q3"]), ("fr", ["q5", "q6"])):
        sub = {q: data.qrels[q] for q in qids}
        ref = reference_metrics(rankings, sub, {"recall@20": (recall_at_k, 6), "recall@100": (recall_at_k, 6),
                                                "ndcg@10": (ndcg_at_k, 6)})
        for name, value in ref.items():
            assert res[f"lang/{lang}/{name}"] == pytest.approx(value, abs=1e-9)
        assert res[f"lang/{lang}/n_queries"] == len(qids)
    for name in ("recall@20", "recall@100", "ndcg@10"):
        assert res[name] == pytest.approx((res[f"lang/en/{name}"] + res[f"lang/fr/{name}"]) / 2)
        assert f"bm25/{name}" in res and f"bm25/lang/fr/{name}" in res
    assert res["n_languages"] == 2 and res["n_queries"] == 5
    assert "mrr@10" not in res


def test_sts_spearman_and_bm25(eval_root):
    res = REGISTRIES["evaluators"].build({"type": "sts"}).evaluate(bow_encode, eval_root)
    rows = [json.loads(line) for line in (eval_root / "eval" / "sts.jsonl").read_text().splitlines()]
    a = bow_encode([r["s1"] for r in rows]).astype(np.float64)
    b = bow_encode([r["s2"] for r in rows]).astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    gold = [r["score"] for r in rows]
    assert res["spearman"] == pytest.approx(stats.spearmanr(cos, gold).statistic, abs=1e-9)
    assert res["pearson"] == pytest.approx(stats.pearsonr(cos, gold).statistic, abs=1e-6)
    assert -1 <= res["bm25/spearman"] <= 1 and res["n_pairs"] == 5


def test_classification_as_retrieval(eval_root):
    res = REGISTRIES["evaluators"].build({"type": "classification"}).evaluate(bow_encode, eval_root)
    assert res["accuracy"] == 1.0 and res["bm25/accuracy"] == 1.0
    assert res["n_examples"] == 6 and res["n_labels"] == 3
    # a template that shares no word with the texts still gives an accuracy in [0, 1]
    tmpl = REGISTRIES["evaluators"].build({"type": "classification", "label_template": "topic: {label}"})
    assert 0.0 <= tmpl.evaluate(bow_encode, eval_root)["accuracy"] <= 1.0
    with pytest.raises(ConfigError, match="label_template"):
        REGISTRIES["evaluators"].build({"type": "classification", "label_template": "no placeholder"})


def test_bad_encoder_output_is_reported(eval_root):
    evaluator = REGISTRIES["evaluators"].build({"type": "sts"})
    from conan_core.errors import ConanError

    with pytest.raises(ConanError, match="shape"):
        evaluator.evaluate(lambda texts: np.zeros((len(texts) + 1, 4)), eval_root)
    with pytest.raises(ConanError, match="non-finite"):
        evaluator.evaluate(lambda texts: np.full((len(texts), 4), np.nan), eval_root)


def test_evaluate_all_table_and_metrics_file(eval_root, tmp_path):
    (eval_root / "eval" / "classification.jsonl").unlink()
    logs = []
    results = evaluate_all(bow_encode, eval_root, log=logs.append)
    assert list(results) == ["retrieval", "cross_lingual", "sts"]
    assert len(logs) == 1 and "classification" in logs[0]
    with pytest.raises(MissingEvalDataError):
        evaluate_all(bow_encode, eval_root, [{"type": "classification"}], missing="raise")
    twice = evaluate_all(bow_encode, eval_root, [{"type": "sts"}, {"type": "sts", "bm25": False}])
    assert list(twice) == ["sts", "sts#2"]

    table = format_table(results)
    lines = table.splitlines()
    assert lines[0].split() == ["task", "/", "metric", "model", "bm25", "delta"]
    row = next(line for line in lines if line.strip().startswith("ndcg@10"))
    assert f"{results['retrieval']['ndcg@10']:.4f}" in row and f"{results['retrieval']['bm25/ndcg@10']:.4f}" in row
    assert "retrieval (n_queries=5, n_docs=6)" in table
    macro = lines.index(next(line for line in lines if line.strip().startswith("recall@20")))
    per_lang = lines.index(next(line for line in lines if "lang/en/recall@20" in line))
    assert macro < per_lang

    results["sts"]["spearman"] = float("nan")
    path = write_metrics(results, tmp_path / "eval" / "metrics.json")
    back = read_metrics(path)
    assert back["sts"]["spearman"] is None and back["retrieval"]["ndcg@10"] == pytest.approx(results["retrieval"]["ndcg@10"])
    assert "nan" in format_table(results)
    assert read_metrics(tmp_path / "missing.json") == {}
    assert not math.isnan(back["sts"]["bm25/spearman"])
