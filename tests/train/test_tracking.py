"""Tracking and evaluation during training on real stages: TensorBoard event files and the offline
W&B run hold exactly the scalars of metrics.jsonl; loss parts are logged on every step they occur;
evaluating (and tracking) changes no training number; keep_best and early stopping; a kill after
or inside an evaluation resumes bit-exactly with the best-so-far state."""

from __future__ import annotations

import json
import signal

import pytest
import torch

from conan_core.train.checkpoint import load_object, load_tensors
from tests.train.harness import copy_run, metrics_rows, run_cli, tensorboard_scalars, wandb_history

pytestmark = pytest.mark.slow

METRIC = "out_of_domain/retrieval/ndcg@10"
TIMINGS = ("tokens_per_s", "eval/seconds")  # wall-clock values differ between any two runs


def _weights(path):
    return load_tensors(path / "model.safetensors")


def _same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _run_weak(run):
    """The weak stage of ``run`` in this process, on one thread like the ``trained_run`` fixture
    (a different thread count may change float reductions)."""
    from conan_core.config import load_config
    from conan_core.train.stages import run_stage

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_stage(load_config(run / "config.yaml"), "weak", run, progress=False)
    finally:
        torch.set_num_threads(threads)


def _steps(run, stage="weak"):
    return (run / stage / "steps.jsonl").read_text().replace(str(run), "RUN")


def test_loss_parts_are_logged_on_every_step_they_occur(trained_run):
    cfg, run, _ = trained_run
    rows = metrics_rows(run / "supervised" / "metrics.jsonl")
    steps = cfg.supervised.steps
    assert sorted(rows) == list(range(1, steps + 1))  # a line per step
    assert all({"loss@16", "loss@32", "lr", "alpha", "grad_norm"} <= set(r) for r in rows.values())
    every = cfg.supervised.sts_every
    assert [s for s, r in rows.items() if "cosent" in r] == [s for s in rows if s % every == 0]
    # the loss of a CoSENT step is its InfoNCE parts plus CoSENT (matryoshka weights 1)
    r = rows[every]
    assert r["loss"] == pytest.approx(r["loss@16"] + r["loss@32"] + r["cosent"], rel=1e-5)
    windows = [s for s, r in rows.items() if "tokens_per_s" in r]
    assert windows == [s for s in rows if s % cfg.supervised.log_every == 0 or s == steps]
    assert all("negatives_replaced" in rows[s] for s in windows)  # DHNM counters of each window


def test_trackers_and_evaluation_change_no_training_number(trained_run, tmp_path):
    cfg, run, _ = trained_run
    sets = ("report_to=[tensorboard, wandb]", "weak.eval_every=15", f"weak.keep_best.metric={METRIC}",
            "weak.keep_best.final=last", "weak.keep_checkpoints=100")  # every evaluated step's checkpoint stays
    out = copy_run(run, tmp_path / "tracked", ("pretrain", "sft"), sets)
    summary = _run_weak(out)

    # training is bit-identical to the run without trackers and evaluation
    assert _same_weights(_weights(run / "weak" / "final"), _weights(out / "weak" / "final"))
    assert _steps(run) == _steps(out)

    rows = metrics_rows(out / "weak" / "metrics.jsonl")
    assert sorted(rows) == list(range(1, cfg.weak.steps + 1))
    evaluated = [s for s, r in rows.items() if f"eval/{METRIC}" in r]
    assert evaluated == list(range(15, cfg.weak.steps + 1, 15))
    assert {"eval/retrieval/ndcg@10", "eval/out_of_domain/sts/spearman", "eval/seconds"} <= set(rows[15])
    assert not any(k.startswith("eval/") and "bm25" in k for k in rows[15])  # BM25 is off during training

    # TensorBoard: every scalar of metrics.jsonl at its step, exactly (double precision)
    assert tensorboard_scalars(out / "weak" / "tb") == rows
    # W&B (offline): one history row per step with the same values
    history = wandb_history(out, "weak")
    assert [int(h.pop("step")) for h in history] == sorted(rows)
    assert history == [rows[s] for s in sorted(rows)]

    # keep_best: best/ holds the evaluated model of the best step, final/ the last one (final: last)
    best = json.loads((out / "weak" / "best" / "best.json").read_text())
    assert best["metric"] == METRIC and best["step"] in evaluated
    assert best["value"] == max(rows[s][f"eval/{METRIC}"] for s in evaluated) == rows[best["step"]][f"eval/{METRIC}"]
    ckpt = _weights(out / "weak" / "checkpoints" / f"step-{best['step']:06d}")
    kept = _weights(out / "weak" / "best")
    assert all(torch.equal(kept[k], ckpt[f"model.{k}"]) for k in kept)
    assert json.loads((out / "weak" / "best" / "embedder.json").read_text())["alpha"] == best["step"] / cfg.weak.steps
    full = json.loads((out / "weak" / "eval" / "step-000015.json").read_text())
    assert any(k.startswith("lang/") for k in full["cross_lingual"])  # per-language rows are kept here
    assert summary["evaluation"]["best_step"] == best["step"] and summary["evaluation"]["evaluations"] == len(evaluated)


def test_early_stopping_keeps_the_best_model_as_final(trained_run, tmp_path):
    _, run, _ = trained_run
    # min_delta 1.0 is more than a Spearman correlation can gain: the second evaluation stops the stage
    sets = ("weak.eval_every=10", "weak.keep_best.metric=sts/spearman", "weak.early_stopping.patience=1",
            "weak.early_stopping.min_delta=1.0")
    out = copy_run(run, tmp_path / "early", ("pretrain", "sft"), sets)
    summary = _run_weak(out)
    assert summary["steps"] == 20 and summary["evaluation"]["stopped_early_at"] == 20
    done = json.loads((out / "weak" / "DONE").read_text())
    assert done["steps"] == 20 and (out / "weak" / "checkpoints" / "step-000020" / "MANIFEST.json").is_file()
    # the 20 steps it trained are those of the full run
    assert _steps(out) == "".join(_steps(run).splitlines(keepends=True)[:20])
    best = json.loads((out / "weak" / "best" / "best.json").read_text())
    assert best == json.loads((out / "weak" / "final" / "best.json").read_text())  # final/ is the best model
    assert _same_weights(_weights(out / "weak" / "best"), _weights(out / "weak" / "final"))
    assert _run_weak(out) == done  # a finished stage is not trained again


def _args(run, *extra):
    return ["weak", str(run / "config.yaml"), "--run-dir", str(run), "--no-progress", *extra]


def _ok(proc):
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"


def _without_timings(rows):
    return {s: {k: v for k, v in r.items() if k not in TIMINGS} for s, r in rows.items()}


def test_kill_after_and_inside_an_evaluation_resumes_exactly(trained_run, tmp_path):
    _, run, _ = trained_run
    sets = ("weak.steps=20", "weak.checkpoint_every=10", "weak.eval_every=5", f"weak.keep_best.metric={METRIC}",
            "weak.early_stopping.patience=50")
    ref = copy_run(run, tmp_path / "ref", ("pretrain", "sft"), sets)
    out = copy_run(run, tmp_path / "out", ("pretrain", "sft"), sets)
    _run_weak(ref)  # the uninterrupted reference, in this process (one thread, like the subprocesses)
    # killed right after step 10 (evaluated, checkpoint committed), then inside the evaluation of step 15
    for fault in ("kill@step=10", "kill_in_eval@step=15"):
        killed = run_cli(_args(out), fault=fault)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert "kill during the evaluation of step 15" in killed.stderr
    resumed = run_cli(_args(out))
    _ok(resumed)
    assert "resumed from" in resumed.stderr and "step-000010" in resumed.stderr

    assert _same_weights(_weights(ref / "weak" / "final"), _weights(out / "weak" / "final"))
    assert _steps(ref) == _steps(out)
    assert _without_timings(metrics_rows(ref / "weak" / "metrics.jsonl")) == \
        _without_timings(metrics_rows(out / "weak" / "metrics.jsonl"))
    for step in (5, 10, 15, 20):
        name = f"eval/step-{step:06d}.json"
        assert (ref / "weak" / name).read_text() == (out / "weak" / name).read_text(), name
    assert (ref / "weak" / "best" / "best.json").read_text() == (out / "weak" / "best" / "best.json").read_text()
    # the best-so-far state in the last checkpoint is the uninterrupted run's
    state_ref = json.loads((ref / "weak" / "checkpoints" / "step-000020" / "trainer.json").read_text())["evaluation"]
    state_out = json.loads((out / "weak" / "checkpoints" / "step-000020" / "trainer.json").read_text())["evaluation"]
    for state in (state_ref, state_out):
        state.pop("seconds")
    assert state_ref == state_out and len(state_ref["history"]) == 4
    assert load_object(ref / "weak" / "checkpoints" / "step-000020" / "rank-00000.pt")["rng"]["python"] == \
        load_object(out / "weak" / "checkpoints" / "step-000020" / "rank-00000.pt")["rng"]["python"]
