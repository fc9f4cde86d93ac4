"""Guards every training entry point shares with `conan run` (README "Reliability"): the run's own
config, finite weights before anything is marked done, checkpoints that cannot run code, the
fallback flag, step names, the resume hint, SIGTERM's exit code and honest progress/summary output."""

from __future__ import annotations

import json
import pickle
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conan_core.cli import main
from conan_core.fsio import sha256_file
from tests.train.harness import REPO, copy_run, job_env, run_cli

pytestmark = pytest.mark.slow
EARLIER = ("pretrain", "sft", "weak")


def _stage(stage, run, *extra):
    return [stage, str(run / "config.yaml"), "--run-dir", str(run), "--no-progress", *extra]


def test_per_stage_command_refuses_a_changed_config(trained_run, tmp_path, capsys):
    _, run, _ = trained_run
    out = copy_run(run, tmp_path / "r", EARLIER)
    code = main(_stage("supervised", out, "--set", "supervised.lr=5e-4", "--set", "supervised.steps=80"))
    assert code == 2
    err = capsys.readouterr().err
    assert "supervised.steps: 30 -> 80" in err and "another config" in err
    assert not (out / "supervised").exists()


def test_an_update_that_makes_weights_non_finite_stops_before_done(trained_run, tmp_path, capsys):
    _, run, _ = trained_run
    out = copy_run(run, tmp_path / "r", EARLIER, ("supervised.lr=1e39", "supervised.steps=1"))
    assert main(_stage("supervised", out)) == 5
    err = capsys.readouterr().err
    assert "optimizer step 1 left non-finite values" in err and "Lower supervised.lr" in err
    assert not (out / "supervised" / "DONE").exists() and not (out / "supervised" / "final").exists()


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: what a crafted checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _interrupted_supervised(run, dest):
    """A copy whose supervised stage has committed checkpoints but is not finished."""
    out = copy_run(run, dest, EARLIER)
    shutil.copytree(run / "supervised" / "checkpoints", out / "supervised" / "checkpoints")
    return out


def test_a_crafted_pickle_in_a_checkpoint_is_refused_not_run(trained_run, tmp_path, capsys):
    _, run, _ = trained_run
    out = _interrupted_supervised(run, tmp_path / "r")
    newest = sorted((out / "supervised" / "checkpoints").iterdir())[-1]
    marker = tmp_path / "payload-ran"
    (newest / "rank-00000.pt").write_bytes(pickle.dumps({"rng": _Payload(str(marker))}))
    manifest = json.loads((newest / "MANIFEST.json").read_text())  # whoever writes a file can fix the hash
    manifest["files"]["rank-00000.pt"]["sha256"] = sha256_file(newest / "rank-00000.pt")
    (newest / "MANIFEST.json").write_text(json.dumps(manifest))
    assert main(_stage("supervised", out)) == 7
    assert "refusing to load checkpoint file" in capsys.readouterr().err
    assert not marker.exists()


def test_run_accepts_the_fallback_flag_its_corrupt_checkpoint_message_recommends(trained_run, tmp_path, capsys):
    _, run, _ = trained_run
    out = _interrupted_supervised(run, tmp_path / "r")
    newest = sorted((out / "supervised" / "checkpoints").iterdir())[-1]
    (newest / "model.safetensors").write_bytes(b"corrupt")
    args = ["run", str(out / "config.yaml"), "--out", str(out), "--no-progress", "--stages", "supervised"]
    assert main(args) == 1
    assert "--fallback-checkpoint" in capsys.readouterr().err
    assert main([*args, "--fallback-checkpoint"]) == 0
    assert json.loads((out / "supervised" / "DONE").read_text())["resumed_from"] < int(newest.name[5:])


def test_unknown_step_names_are_refused_with_a_suggestion(tmp_path, capsys):
    assert main(["run", "tiny", "--out", str(tmp_path / "r"), "--stages", "pretrian"]) == 1
    assert "did you mean 'pretrain'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_ctrl_c_hint_repeats_the_overrides_and_progress_bars_obey(tmp_path):
    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "conan_core.cli", "run", "tiny", "--out", str(out), "--no-progress",
           "--set", "data.demo_scale=0.1", "--set", "tokenizer.vocab_size=600", "--set", "pretrain.steps=100000"]
    proc = subprocess.Popen(cmd, env=job_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=str(REPO))
    deadline = time.time() + 120
    while not list(out.glob("pretrain/metrics.jsonl")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)  # wait until pretraining runs: the tokenizer was trained by then
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "--set pretrain.steps=100000" in stderr and "to resume" in stderr
    assert "tokenizer sample" not in stderr and "it/s" not in stderr  # --no-progress: no bar at all
    assert "report.md" not in stdout  # nothing claims files that were never written


def test_sigterm_exits_with_the_preempted_code(trained_run, tmp_path):
    _, run, _ = trained_run
    out = copy_run(run, tmp_path / "r", EARLIER)
    proc = run_cli(["run", str(out / "config.yaml"), "--out", str(out), "--no-progress"], fault="sigterm@step=3")
    assert proc.returncode == 75, proc.stderr[-3000:]
    assert "preempted" in proc.stderr and (out / "supervised" / "checkpoints" / "step-000003").is_dir()
    assert not (out / "report.md").exists()
