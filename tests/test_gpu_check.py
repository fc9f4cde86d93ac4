"""The GPU check script runs end to end at toy sizes on CPU, so a run on a lent GPU can trust it."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_check_gpu_smoke_on_cpu():
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu" / "check_gpu.py"), "--smoke"],
                         capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    for row in ("train: weak (soft mask, InfoNCE)", "train: causal LM", "faiss flat vs torch bf16 top-k",
                "encode throughput", "encode throughput packed", "train: supervised padded",
                "train: supervised packed", "train: supervised packed + compiled blocks"):
        line = next(l for l in res.stdout.splitlines() if l.startswith(row + "  "))
        assert "  ok  " in line, line


def test_check_gpu_without_cuda_says_so():
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu" / "check_gpu.py")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "CUDA is not available" in res.stderr
