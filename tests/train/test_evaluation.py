"""Evaluation during training without a model: the config checks, the metric names, keep_best's
comparisons (max / min, early stopping's min_delta, NaN), its state round trip and the files a
resume rewinds."""

from __future__ import annotations

import json

import pytest

from conan_core.config import StageConfig, load_config
from conan_core.errors import ConanError, ConfigError
from conan_core.train.evaluation import StageEvaluation, best_dir, flat_metrics


def _evaluation(tmp_path, **fields):
    settings = StageConfig(steps=100, **fields)
    return StageEvaluation(stage="weak", settings=settings, evaluators=[], eval_root=tmp_path, out_dir=tmp_path,
                           embedder_for=lambda step: None, save_best=lambda step, info: None)


def test_config_checks_name_the_field():
    with pytest.raises(ConfigError) as err:
        load_config("tiny", ["weak.keep_best.metric=out_of_domain/retrieval/ndcg@10",
                             "supervised.eval_every=5", "supervised.keep_best.metric=retreival/ndcg@10",
                             "sft.early_stopping.patience=2"])
    text = str(err.value)
    assert "weak.keep_best: needs weak.eval_every" in text
    assert "supervised.keep_best.metric: expected [out_of_domain/]<task>/<metric>" in text and "retrieval/..." in text
    assert "sft.early_stopping: needs sft.keep_best" in text
    ok = load_config("tiny", ["weak.eval_every=5", "weak.keep_best.metric=out_of_domain/sts/spearman"])
    assert ok.weak.keep_best.final == "best" and ok.weak.keep_best.mode == "max"


def test_flat_metrics_keep_aggregates_only():
    results = {"retrieval": {"ndcg@10": 0.5, "n_queries": 30, "lang/de/recall@20": 0.1, "bm25/ndcg@10": 0.7},
               "out_of_domain/sts": {"spearman": -0.2}}
    assert flat_metrics(results) == {"retrieval/ndcg@10": 0.5, "out_of_domain/sts/spearman": -0.2}


def test_keep_best_comparisons_and_state(tmp_path):
    ev = _evaluation(tmp_path, eval_every=10, keep_best={"metric": "sts/spearman", "mode": "min"},
                     early_stopping={"patience": 2, "min_delta": 0.1})
    assert ev._compare(0.5) == (True, True)  # the first value is the best so far
    ev.best_value = 0.5
    assert ev._compare(0.45) == (True, False)  # lower is better, but not by more than min_delta
    assert ev._compare(0.3) == (True, True)
    assert ev._compare(0.6) == (False, False) and ev._compare(float("nan")) == (False, False)
    ev.best_step, ev.bad_evals, ev.history = 20, 1, [[10, 0.7], [20, 0.5]]
    state = json.loads(json.dumps(ev.state_dict()))
    again = _evaluation(tmp_path, eval_every=10, keep_best={"metric": "sts/spearman", "mode": "min"})
    again.load_state_dict(state)
    assert (again.best_value, again.best_step, again.bad_evals, again.history) == (0.5, 20, 1, [[10, 0.7], [20, 0.5]])
    assert [s for s in range(1, 101) if ev.due(s)] == list(range(10, 101, 10))
    with pytest.raises(ConanError, match=r"weak.keep_best.metric: .* gave no metric 'sts/spearman'; it gave: "
                                         r"retrieval/ndcg@10"):
        ev._watched({"retrieval/ndcg@10": 0.1})


def test_rewind_forgets_later_results_and_best_dir_finds_the_kept_step(tmp_path):
    ev = _evaluation(tmp_path, eval_every=5)
    (tmp_path / "eval").mkdir()
    for step in (5, 10, 15):
        (tmp_path / "eval" / f"step-{step:06d}.json").write_text("{}")
    (tmp_path / "best.old").mkdir()
    (tmp_path / "best.old" / "best.json").write_text(json.dumps({"step": 10}))
    assert best_dir(tmp_path, 10) == tmp_path / "best.old" and best_dir(tmp_path, 15) is None
    ev.rewind(10)
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["step-000005.json", "step-000010.json"]
    ev.rewind(0)  # a stage starting over forgets its earlier best model too
    assert not list((tmp_path / "eval").iterdir()) and not (tmp_path / "best.old").exists()
