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


def assert_preempted(proc: subprocess.CompletedProcess, nproc: int) -> None:
    """A SIGTERM'd engine job stopped after committing its checkpoint on every rank: exit 0, or
    gloo's exit-abort race at process teardown after every rank reported the committed checkpoint
    (the resume that follows checks the state bit for bit)."""
    text = proc.stdout + proc.stderr
    committed = text.count("committed, stopping (resume to continue)")
    if proc.returncode != 0 and GLOO_EXIT_ABORT in text and committed >= nproc:
        return
    assert proc.returncode == 0, proc.stderr[-4000:]


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



# ----------------------------------------------------------------------------- tracker files

def metrics_rows(path: Path) -> dict[int, dict]:
    """``metrics.jsonl`` as ``{step: {name: value}}``."""
    rows = (json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip())
    return {row.pop("step"): row for row in rows}


def tensorboard_scalars(log_dir: Path) -> dict[int, dict]:
    """Every scalar of the TensorBoard event files under ``log_dir`` as ``{step: {tag: value}}``,
    read by TensorBoard's own loader (purged steps of a resumed run are dropped as it drops them)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    acc = EventAccumulator(str(log_dir), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    out: dict[int, dict] = {}
    for tag in acc.Tags()["tensors"]:
        for event in acc.Tensors(tag):
            out.setdefault(event.step, {})[tag] = float(make_ndarray(event.tensor_proto))
    for tag in acc.Tags()["scalars"]:
        for event in acc.Scalars(tag):
            out.setdefault(event.step, {})[tag] = event.value
    return out


def wandb_history(run_dir: Path, stage: str) -> list[dict]:
    """The history rows ``stage`` logged in the offline W&B runs under ``RUN/wandb`` (in file order),
    each ``{name: value}`` with the ``<stage>/`` prefix removed.

    W&B writes a ``.wandb`` file per process: a 7-byte header, then records in LevelDB's log
    format (32 KiB blocks, each chunk a 7-byte header: crc32, length, type FULL/FIRST/MIDDLE/LAST),
    each record a ``wandb_internal_pb2.Record`` protobuf."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    rows = []
    for path in sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")):
        data = path.read_bytes()
        assert data[:4] == b":W&B", f"{path}: not a W&B transaction log"
        pos, pending = 7, b""
        while pos + 7 <= len(data):
            left = 32768 - pos % 32768
            if left < 7:
                pos += left
                continue
            _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
            if length == 0 and kind == 0:  # block padding
                pos += left
                continue
            chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
            pending = chunk if kind in (1, 2) else pending + chunk
            if kind not in (1, 4):
                continue
            record = pb.Record()
            record.ParseFromString(pending)
            if record.WhichOneof("record_type") == "history":
                items = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item}
                prefix = f"{stage}/"
                row = {k[len(prefix):]: v for k, v in items.items() if k.startswith(prefix)}
                if row:
                    rows.append(row)
    return rows
