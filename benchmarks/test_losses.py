"""Loss hot paths, each as a ratio to an anchor measured in the same run (BENCHMARKS.md #4 and #10).

* GradCache (``cached``) vs plain in-batch InfoNCE (one forward + backward of the whole batch):
  peak-memory ratio and step-time ratio, gradients checked against a float64 plain step.
* Chunked LM-head cross-entropy (``causal_lm``) vs ``F.cross_entropy`` on the full logits:
  peak-memory ratio and step-time ratio, loss and gradients checked against float64.

Sizes: short (default) — GradCache 128 queries + 128 positives, mini-batch 16; CE 1024 tokens x
vocab 8000 (hidden 64, chunks of 256). ``CONAN_BENCH_FULL=1`` — 1024 + 1024 / 64 and 4096 tokens x
vocab 32000 (hidden 128, chunks of 1024 tokens).

Peak memory on CPU: each variant runs in a fresh subprocess (this file run as a script) whose glibc
malloc serves every block above 64 KiB with its own mmap and gives freed memory back at once
(``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``), so resident memory follows live tensors.
It runs one warm-up step (one-time costs: code pages, thread pools, lazy init), then three measured
steps, each after recording its resident set and resetting the kernel's high-water mark (``echo 5 >
/proc/self/clear_refs``), and reports ``VmHWM - VmRSS(before)`` from /proc/self/status per step: the
extra memory the step needed at its peak. ``memory_ratio`` is the median of the per-step ratios
candidate / anchor (step i of one process against step i of the other) with its spread. Where
clear_refs is not writable, ``ru_maxrss`` minus the pre-step RSS is used instead (the warm-up's peak
then counts too); ``extra_info["memory_method"]`` says which. On GPU one would use
``torch.cuda.max_memory_allocated`` instead.

Times: interleaved rounds in this process (``interleave.py``: ABBA order, warm-up excluded, CPU
time); ``time_ratio`` is the per-round candidate / anchor ratio (median and spread).
"""

from __future__ import annotations

import copy
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
SHORT = os.environ.get("CONAN_BENCH_FULL", "") != "1"


# ----------------------------------------------------------------------------- GradCache vs plain

class TinyEncoder(nn.Module):
    """Token embedding + two residual MLP blocks + mean pool: activations dominate memory, as in a real encoder."""

    def __init__(self, vocab: int = 2000, dim: int = 64, hidden: int = 256):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
                                    for _ in range(2))

    def forward(self, inputs):
        x = self.embed(inputs["ids"])
        for block in self.blocks:
            x = x + block(x)
        return x.mean(1)


def gradcache_setup(short: bool) -> dict:
    from conan_core.registries import REGISTRIES

    torch.manual_seed(0)
    batch, chunk, length = (128, 16, 32) if short else (1024, 64, 32)
    return {
        "model": TinyEncoder(),
        "q": {"ids": torch.randint(0, 2000, (batch, length))},
        "p": {"ids": torch.randint(0, 2000, (batch, length))},
        "plain": REGISTRIES["contrastive_losses"].build("info_nce"),
        "cached": REGISTRIES["contrastive_losses"].build({"type": "cached", "mini_batch_size": chunk}),
        "sizes": {"batch": batch, "mini_batch_size": chunk, "seq_len": length},
    }


def gradcache_plain(s: dict) -> torch.Tensor:
    model = s["model"]
    model.zero_grad(set_to_none=True)
    out = s["plain"](model(s["q"]), model(s["p"]))
    out.loss.backward()
    return out.loss.detach()


def gradcache_cached(s: dict) -> torch.Tensor:
    from conan_core.train.grad_cache import grad_cache_step

    s["model"].zero_grad(set_to_none=True)
    return grad_cache_step(s["cached"], s["model"], s["q"], s["p"], chunk=s["cached"].grad_cache_chunk).loss


# ----------------------------------------------------------------------------- chunked vs full CE

def ce_setup(short: bool) -> dict:
    from conan_core.registries import REGISTRIES

    torch.manual_seed(0)
    tokens, vocab, hidden, chunk = (1024, 8000, 64, 256) if short else (4096, 32000, 128, 1024)
    return {
        "hidden": (torch.randn(1, tokens + 1, hidden) / hidden ** 0.5).requires_grad_(True),
        "weight": torch.randn(vocab, hidden).requires_grad_(True),
        "labels": torch.randint(0, vocab, (1, tokens + 1)),
        "chunked": REGISTRIES["lm_losses"].build({"type": "causal_lm", "chunk_size": chunk}),
        "sizes": {"tokens": tokens, "vocab": vocab, "hidden": hidden, "chunk_size": chunk},
    }


def ce_full(s: dict) -> torch.Tensor:
    s["hidden"].grad = s["weight"].grad = None
    logits = s["hidden"][0, :-1] @ s["weight"].T
    loss = F.cross_entropy(logits, s["labels"][0, 1:])
    loss.backward()
    return loss.detach()


def ce_chunked(s: dict) -> torch.Tensor:
    s["hidden"].grad = s["weight"].grad = None
    loss = s["chunked"](s["hidden"], s["weight"], s["labels"]).loss
    loss.backward()
    return loss.detach()


CASES = {
    "gradcache": (gradcache_setup, {"anchor": gradcache_plain, "candidate": gradcache_cached}),
    "ce": (ce_setup, {"anchor": ce_full, "candidate": ce_chunked}),
}


# ----------------------------------------------------------------------------- measurement

def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


MEMORY_STEPS = 3


def measure_peak_here(case: str, variant: str, short: bool) -> dict:
    """Run ``case``/``variant`` in this (fresh) process: a warm-up step, then :data:`MEMORY_STEPS`
    measured steps; the extra peak RSS of each in MiB."""
    setup, fns = CASES[case]
    state = setup(short)
    fns[variant](state)  # warm-up: one-time costs are not the step's memory
    peaks, method = [], "VmHWM after clear_refs reset"
    for _ in range(MEMORY_STEPS):
        before = _status_kib("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            method = "ru_maxrss (no clear_refs)"
        fns[variant](state)
        if method.startswith("VmHWM"):
            peak = _status_kib("VmHWM")
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peaks.append((peak - before) / 1024)
    return {"peaks_mib": peaks, "method": method}


def peak_in_subprocess(case: str, variant: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    res = subprocess.run([sys.executable, __file__, case, variant, "short" if SHORT else "full"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_case(benchmark, interleave, case: str, rounds: int) -> dict:
    setup, fns = CASES[case]
    state = setup(SHORT)
    timed = benchmark.pedantic(interleave.interleave,
                               args=({"anchor": lambda: fns["anchor"](state),
                                      "candidate": lambda: fns["candidate"](state)},),
                               kwargs={"rounds": rounds}, rounds=1, iterations=1)
    mem_a = peak_in_subprocess(case, "anchor")
    mem_c = peak_in_subprocess(case, "candidate")
    med = timed.medians()
    info = benchmark.extra_info
    info.update({
        **state["sizes"], "short": SHORT, "threads": torch.get_num_threads(),
        "time_anchor_s": med["anchor"], "time_candidate_s": med["candidate"],
        "peak_anchor_mib": statistics.median(mem_a["peaks_mib"]),
        "peak_candidate_mib": statistics.median(mem_c["peaks_mib"]), "memory_method": mem_a["method"],
    })
    interleave.record(info, "time_ratio", timed.ratio("candidate", "anchor"))
    interleave.record(info, "memory_ratio", interleave.summarize(
        [c / max(a, 1e-9) for a, c in zip(mem_a["peaks_mib"], mem_c["peaks_mib"])]))
    print(f"\n{case}: peak {info['peak_candidate_mib']:.1f} MiB vs {info['peak_anchor_mib']:.1f} MiB "
          f"(memory_ratio {info['memory_ratio']:.3g}, steps {mem_c['peaks_mib']} vs {mem_a['peaks_mib']}); "
          f"time_ratio {info['time_ratio']:.3g}")
    return info


# ----------------------------------------------------------------------------- benchmarks

def test_gradcache_vs_plain_info_nce(benchmark, interleave):
    # correctness first: GradCache's fp32 gradients vs a float64 plain step on the same model
    state = gradcache_setup(True)
    ref_state = {**state, "model": copy.deepcopy(state["model"]).double()}
    ref_state["model"].embed.weight.data = state["model"].embed.weight.data.double()
    gradcache_cached(state)
    gradcache_plain(ref_state)
    for got, want in zip(state["model"].parameters(), ref_state["model"].parameters()):
        torch.testing.assert_close(got.grad.double(), want.grad, rtol=1e-3, atol=1e-5)

    info = run_case(benchmark, interleave, "gradcache", rounds=5)
    # activations of one mini-batch instead of the batch: GradCache must need less peak memory
    assert info["memory_ratio"] < 1.0, info


def test_chunked_vs_full_lm_head_cross_entropy(benchmark, interleave):
    state = ce_setup(True)
    ce_chunked(state)
    got = (state["hidden"].grad, state["weight"].grad)
    h64 = state["hidden"].detach().double().requires_grad_(True)
    w64 = state["weight"].detach().double().requires_grad_(True)
    want_loss = F.cross_entropy(h64[0, :-1] @ w64.T, state["labels"][0, 1:])
    want = torch.autograd.grad(want_loss, (h64, w64))
    for g, w in zip(got, want):
        torch.testing.assert_close(g.double(), w, rtol=1e-4, atol=1e-7)

    info = run_case(benchmark, interleave, "ce", rounds=5)
    assert info["memory_ratio"] < 1.0, info


if __name__ == "__main__":
    print(json.dumps(measure_peak_here(sys.argv[1], sys.argv[2], sys.argv[3] == "short")))
