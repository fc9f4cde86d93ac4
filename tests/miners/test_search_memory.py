"""RELIABILITY #17: mining memory budget (chunked top-k of a 20k x 20k search under 256 MiB)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_chunked_search_of_20k_by_20k_fits_a_256_mib_budget():
    # RELIABILITY #17: the full 20k x 20k float32 score matrix alone is 1.6 GB; the chunked top-k
    # must finish under an address-space limit of (what torch itself maps) + 256 MiB, and the
    # unchunked path must hit the same limit (proving the budget bites).
    script = textwrap.dedent("""
        import resource, numpy as np, torch
        torch.set_num_threads(1)
        from conan_core.miners.index import torch_topk
        def vm():
            for line in open("/proc/self/status"):
                if line.startswith("VmSize"):
                    return int(line.split()[1]) * 1024
        rng = np.random.default_rng(0)
        c = rng.standard_normal((20000, 32), dtype=np.float32)
        c /= np.linalg.norm(c, axis=1, keepdims=True)
        torch_topk(c[:10], c[:10], 5)  # torch's own lazy allocations happen before the limit
        limit = vm() + (256 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        s, i = torch_topk(c, c, 10, chunk_size=512)
        assert s.shape == (20000, 10) and bool((i[:, 0] == torch.arange(20000)).all())
        try:
            torch_topk(c, c, 10, chunk_size=None)
            print("UNCHUNKED-FIT")
        except (RuntimeError, MemoryError):
            print("UNCHUNKED-OOM")
        print("CHUNKED-OK")
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "CHUNKED-OK" in out.stdout and "UNCHUNKED-OOM" in out.stdout
