"""Helpers of the training tests: run ``engine_job.py`` or ``conan <stage>`` in a subprocess
(optionally under torchrun) with a ``CONAN_FAULT``, and compare results exactly.

Test modules import them from ``tests.train.harness``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
JOB = HERE / "engine_job.py"
REPO = HERE.parents[1]
TIMEOUT = 120  # a hung job is a failure (RELIABILITY harness)


def job_env(fault: str | None = None, hashseed: str = "0") -> dict:
    env = dict(os.environ)
    env.pop("CONAN_FAULT", None)
    if fault:
        env["CONAN_FAULT"] = fault
    env.update(OMP_NUM_THREADS="1", PYTHONHASHSEED=hashseed, CONAN_DISABLE_PLUGINS="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_job(cfg: dict, fault: str | None = None, nproc: int = 1, hashseed: str = "0") -> subprocess.CompletedProcess:
    """Run the engine job; ``nproc > 1`` uses ``torchrun --nproc_per_node`` (gloo)."""
    arg = json.dumps(cfg)
    if nproc == 1:
        cmd = [sys.executable, str(JOB), arg]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               "--rdzv_backend=c10d", "--rdzv_endpoint=localhost:0", "--max_restarts=0", str(JOB), arg]
    for attempt in (1, 2):
        try:
            proc = subprocess.run(cmd, env=job_env(fault, hashseed), capture_output=True, text=True,
                                  timeout=TIMEOUT, cwd=str(REPO))
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"engine job hung (> {TIMEOUT} s): {cmd}\nstdout: {exc.stdout}\nstderr: {exc.stderr}")
        # A gloo teardown race on a loaded machine occasionally aborts a rank at process exit
        # after its work is done ("terminate called without an active exception"); the job
        # resumes exactly from its committed state, so one rerun of a fault-free job is safe.
        if (attempt == 1 and nproc > 1 and fault is None and proc.returncode != 0
                and GLOO_EXIT_ABORT in proc.stdout + proc.stderr):
            continue
        return proc
    return proc


GLOO_EXIT_ABORT = "terminate called without an active exception"


def summaries(proc: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line.split("SUMMARY ", 1)[1]) for line in proc.stdout.splitlines() if "SUMMARY " in line]


def assert_ok(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    return summaries(proc)[0]


def load_final(out: Path) -> dict:
    return torch.load(out / "final.pt", weights_only=False)


def assert_same_final(a: Path, b: Path) -> None:
    """Every parameter, every optimizer tensor and the post-run RNG draws are identical."""
    fa, fb = load_final(a), load_final(b)
    assert fa["params"].keys() == fb["params"].keys()
    for k in fa["params"]:
        assert torch.equal(fa["params"][k], fb["params"][k]), f"parameter {k} differs"
    sa, sb = fa["optimizer"]["state"], fb["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for pid in sa:
        for name, value in sa[pid].items():
            assert torch.equal(value, sb[pid][name]), f"optimizer state {pid}.{name} differs"
    assert fa["draws"] == fb["draws"], "RNG draws after the run differ"


def load_job_module():
    """``engine_job`` as a module (it is also run as a script by :func:`run_job`)."""
    from tests.train import engine_job

    return engine_job


BASE = {"steps": 12, "grad_accum": 2, "checkpoint_every": 3, "batch_size": 4}



# ----------------------------------------------------------------------------- real stages

STAGE_OVERRIDES = [
    "data.demo_scale=0.1", "tokenizer.vocab_size=600", "model.hidden_size=32", "model.intermediate_size=64",
    "pretrain.steps=40", "pretrain.batch_size=4", "pretrain.max_length=64", "pretrain.lr=3e-3",
    "pretrain.checkpoint_every=20", "pretrain.log_every=5",
    "sft.steps=30", "sft.batch_size=8", "sft.max_length=64", "sft.lr=2e-3", "sft.checkpoint_every=15",
    "weak.steps=60", "weak.batch_size=8", "weak.max_length=48", "weak.lr=3e-3", "weak.checkpoint_every=15",
    "supervised.steps=30", "supervised.batch_size=8", "supervised.max_length=48", "supervised.lr=1e-3",
    "supervised.checkpoint_every=10", "supervised.sts_every=5", "supervised.sts_batch_size=8",
    "supervised.loss.dims=[16, 32]",
]



def copy_run(run: Path, dest: Path, keep: tuple[str, ...], sets: tuple[str, ...] = ()) -> Path:
    """A copy of ``run`` with its data, tokenizer, config and the finished stages ``keep``; ``sets``
    (``KEY=VALUE``) are applied to the copy's config.yaml, as if the run had been started with them
    (every entry point refuses a config that differs from the run's)."""
    import shutil

    from conan_core.config import dump_config, load_config

    dest.mkdir(parents=True, exist_ok=True)
    for name in ("data", "tokenizer", *keep):
        shutil.copytree(run / name, dest / name)
    dump_config(load_config(run / "config.yaml", list(sets)), dest / "config.yaml")
    return dest


def run_cli(args: list[str], fault: str | None = None, nproc: int = 1) -> subprocess.CompletedProcess:
    """``conan ARGS`` in a subprocess (``torchrun`` with ``nproc`` > 1); a hang fails the test."""
    if nproc == 1:
        cmd = [sys.executable, "-m", "conan_core.cli", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--rdzv_backend=c10d",
               "--rdzv_endpoint=localhost:0", "--max_restarts=0", "-m", "conan_core.cli", *args]
    try:
        return subprocess.run(cmd, env=job_env(fault), capture_output=True, text=True, timeout=TIMEOUT,
                              cwd=str(REPO))
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"command hung (> {TIMEOUT} s): {cmd}\nstdout: {exc.stdout}\nstderr: {exc.stderr}")

