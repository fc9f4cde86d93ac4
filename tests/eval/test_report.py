"""In-domain and out-of-domain evaluation: evaluate_domains, the tables, metrics.json and the plots."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from conan_core.eval.report import (by_domain, domain_roots, evaluate_all, evaluate_domains, format_table,
                                    split_domain)

DIM = 256


def trigram_encoder(texts: list[str]) -> np.ndarray:
    """A real (if simple) text encoder: hashed character trigrams, float32 [N, DIM]."""
    out = np.zeros((len(texts), DIM), np.float32)
    for i, text in enumerate(texts):
        t = f"  {text.lower()}  "
        for j in range(len(t) - 2):
            out[i, zlib.crc32(t[j:j + 3].encode()) % DIM] += 1.0
    return out


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _retrieval(root, pairs, langs=None):
    _write(root / "queries.jsonl", [{"id": f"q{i}", "text": q, **({"lang": langs[i]} if langs else {})}
                                    for i, (q, _) in enumerate(pairs)])
    _write(root / "corpus.jsonl", [{"id": f"d{i}", "text": d} for i, (_, d) in enumerate(pairs)])
    _write(root / "qrels.jsonl", [{"qid": f"q{i}", "doc_id": f"d{i}", "score": 1} for i in range(len(pairs))])


@pytest.fixture
def data_root(tmp_path):
    ev = tmp_path / "data" / "eval"
    _retrieval(ev / "retrieval", [("open a file", "Open file and return a stream."),
                                  ("sort a list", "Return a new sorted list from the items."),
                                  ("join paths", "Join two path components.")])
    _retrieval(ev / "cross_lingual", [("Datei öffnen", "Open file"), ("Ouvrir le fichier", "Open file again"),
                                      ("Liste sortieren", "Sort the list")], langs=["de", "fr", "de"])
    _write(ev / "sts.jsonl", [{"s1": "a cat", "s2": "a cat sat", "score": 4}, {"s1": "a cat", "s2": "stocks", "score": 0},
                              {"s1": "dogs run", "s2": "a dog runs", "score": 3}])
    _write(ev / "classification.jsonl", [{"text": "Guten Tag", "label": "German"},
                                         {"text": "Bonjour", "label": "French"}])
    ood = ev / "out_of_domain"
    _retrieval(ood / "retrieval", [("plot a line", "Plot y versus x as lines."),
                                   ("register a model", "Register the given model with the admin.")])
    _retrieval(ood / "cross_lingual", [("Weiterleitung", "Redirect"), ("Перенаправлення", "Redirects list")],
               langs=["de", "uk"])
    return tmp_path / "data"


def test_domain_roots_and_names(data_root):
    roots = domain_roots(data_root)
    assert roots == {"in_domain": data_root / "eval", "out_of_domain": data_root / "eval" / "out_of_domain"}
    assert domain_roots(data_root / "eval") == roots
    assert domain_roots(data_root / "eval" / "retrieval") == {"in_domain": data_root / "eval" / "retrieval"}
    assert split_domain("out_of_domain/retrieval") == ("out_of_domain", "retrieval")
    assert split_domain("retrieval") == ("in_domain", "retrieval")
    assert split_domain("sts#2") == ("in_domain", "sts#2")


def test_evaluate_domains_reports_both_next_to_bm25(data_root):
    logged = []
    results = evaluate_domains(trigram_encoder, data_root, log=logged.append)
    assert list(results) == ["retrieval", "cross_lingual", "sts", "classification",
                             "out_of_domain/retrieval", "out_of_domain/cross_lingual"]
    # out-of-domain has no STS / classification data here: skipped and said so
    assert any(m.startswith("out_of_domain: skipping sts") for m in logged)
    for name in ("retrieval", "out_of_domain/retrieval"):
        assert {"ndcg@10", "bm25/ndcg@10", "recall@1", "bm25/recall@1"} <= set(results[name])
    xl = results["out_of_domain/cross_lingual"]
    assert xl["n_queries"] == 2 and {"lang/uk/recall@20", "bm25/lang/uk/recall@20"} <= set(xl)
    # the same numbers as evaluating the out-of-domain root by itself
    alone = evaluate_all(trigram_encoder, data_root / "eval" / "out_of_domain")
    assert results["out_of_domain/retrieval"] == alone["retrieval"]
    grouped = by_domain(results)
    assert set(grouped) == {"in_domain", "out_of_domain"} and grouped["out_of_domain"]["retrieval"] == alone["retrieval"]
    # explicit tasks: missing in-domain data raises, missing out-of-domain data is skipped
    only = evaluate_domains(trigram_encoder, data_root, [{"type": "sts"}], missing="raise")
    assert list(only) == ["sts"]


def test_format_table_blocks_per_domain(data_root):
    results = evaluate_domains(trigram_encoder, data_root)
    table = format_table(results)
    heads = [line.split(" (")[0] for line in table.splitlines() if "[" in line]
    assert heads == ["retrieval [in_domain]", "retrieval [out_of_domain]", "cross_lingual [in_domain]",
                     "cross_lingual [out_of_domain]", "sts [in_domain]", "classification [in_domain]"]
    assert "[in_domain]" not in format_table({"sts": results["sts"]})  # one domain: no labels


def test_run_report_table_metrics_and_plots(data_root, tmp_path, capsys):
    from conan_core.config import load_config
    from conan_core.report import (format_summary, metric_rows, per_language_figure, soft_mask_figure,
                                   write_report)

    results = evaluate_domains(trigram_encoder, data_root)
    rows = metric_rows(results)
    ndcg = [(task, domain) for task, domain, key, _, _ in rows if key == "ndcg@10" and task == "retrieval"]
    assert ndcg == [("retrieval", "in_domain"), ("retrieval", "out_of_domain")]  # in above out
    assert all(bm25 is not None for task, _, key, _, bm25 in rows if task in ("retrieval", "cross_lingual"))
    run = tmp_path / "run"
    run.mkdir()
    table = format_summary(run, results)
    line = next(ln for ln in table.splitlines() if ln.startswith("retrieval") and "out_of_domain" in ln
                and "ndcg@10" in ln)
    value = results["out_of_domain/retrieval"]
    assert f"{value['ndcg@10']:.4f}" in line and f"{value['bm25/ndcg@10']:.4f}" in line
    assert "lang/uk" not in table and "lang/uk" in format_summary(run, results, per_language=True)

    cfg = load_config("tiny", ["weak.mask.schedule.type=cosine"])
    write_report(cfg, run, {"eval": results, "seconds": 1.0})
    printed = capsys.readouterr().out
    assert "out_of_domain" in printed and "BM25" in printed
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["eval"]["out_of_domain/retrieval"]["ndcg@10"] == pytest.approx(value["ndcg@10"])
    assert metrics["eval_by_domain"]["out_of_domain"]["retrieval"]["ndcg@10"] == pytest.approx(value["ndcg@10"])
    report = (run / "report.md").read_text()
    assert "`out_of_domain` = sources no training split holds" in report and "lang/uk/recall@20" in report
    for png in ("soft_mask.png", "per_language_recall.png"):
        assert (run / "plots" / png).stat().st_size > 1000

    fig = per_language_figure(results)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["in_domain: cross-lingual Recall@20",
                                                 "out_of_domain: cross-lingual Recall@20"]
    for ax in panels:  # the model's bars beside BM25's
        assert [c.get_label() for c in ax.containers] == ["model", "BM25"]
    ood_bm25 = [b.get_height() for b in panels[1].containers[1]]
    xl = results["out_of_domain/cross_lingual"]
    assert ood_bm25 == pytest.approx([xl["bm25/lang/de/recall@20"], xl["bm25/lang/uk/recall@20"]])

    fig = soft_mask_figure(cfg)
    assert "schedule: cosine" in fig._suptitle.get_text()
    masks = [ax for ax in fig.axes if ax.get_xlabel() == "key position j"]
    assert len(masks) == 5 and masks[0].get_ylabel() == "query position i"
    colorbars = [ax for ax in fig.axes if ax not in masks and ax.get_ylabel().startswith("M[i, j]")]
    assert len(colorbars) == 1
    assert soft_mask_figure(load_config("tiny", ["weak.mask={type: bidirectional}"])) is None
