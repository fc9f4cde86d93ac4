"""RMSNorm factories (fwd+bwd, fp32, CPU) against nn.RMSNorm and F.layer_norm in the same run.

Shape: [4096, 3584] (tokens x Conan-1.4B hidden size) with ``CONAN_BENCH_FULL=1``, [512, 3584]
otherwise. Each factory row checks its output against the float64 reference first, times the
anchors interleaved with it, and stores ``factory / anchor`` median-time ratios in
``benchmark.extra_info``. The compiled row excludes compile time (one warm-up call).
"""

from __future__ import annotations

import os
import statistics
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conan_core.ops.norms.base import rms_norm_reference
from conan_core.registries import REGISTRIES

FULL = os.environ.get("CONAN_BENCH_FULL", "") == "1"
SHAPE = (4096, 3584) if FULL else (512, 3584)
ROUNDS = 10 if FULL else 5
EPS = 1e-6


def make_input():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(SHAPE, generator=gen).requires_grad_()


def fwd_bwd(module, x):
    x.grad = None
    for p in module.parameters():
        p.grad = None
    out = module(x)
    out.backward(torch.ones_like(out))
    return out


class LayerNorm(nn.Module):
    """F.layer_norm with a weight and bias (the anchor a RMSNorm should beat)."""

    def __init__(self, size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.bias = nn.Parameter(torch.zeros(size))

    def forward(self, x):
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, EPS)


def interleaved_medians(modules: dict, x, rounds: int = ROUNDS) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in modules}
    for m in modules.values():
        fwd_bwd(m, x)
    for _ in range(rounds):
        for name, m in modules.items():
            start = time.perf_counter()
            fwd_bwd(m, x)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


@pytest.mark.parametrize("key", ["torch", "compiled"])
def test_rms_norm_factory(benchmark, key):
    x = make_input()
    module = REGISTRIES["norms"].build({"type": key}).make(SHAPE[-1], EPS)
    with torch.no_grad():
        module.weight.copy_(1 + 0.1 * torch.randn(SHAPE[-1], generator=torch.Generator().manual_seed(1)))
    out = fwd_bwd(module, x)  # also the compile warm-up for "compiled"
    ref = rms_norm_reference(x.detach(), module.weight.detach(), EPS)
    assert torch.allclose(out.double(), ref, atol=1e-5, rtol=1e-5), (out.double() - ref).abs().max()

    medians = interleaved_medians({key: module, "nn.RMSNorm": nn.RMSNorm(SHAPE[-1], eps=EPS),
                                   "F.layer_norm": LayerNorm(SHAPE[-1])}, x)
    ratios = {"over_nn_rmsnorm": medians[key] / medians["nn.RMSNorm"],
              "over_layer_norm": medians[key] / medians["F.layer_norm"]}
    benchmark.extra_info.update(shape=list(SHAPE), key=key, medians_s=medians, **ratios)
    print(f"\nnorm {key} {list(SHAPE)}: {medians[key] * 1e3:.2f} ms fwd+bwd; "
          f"x{ratios['over_nn_rmsnorm']:.2f} vs nn.RMSNorm, x{ratios['over_layer_norm']:.2f} vs F.layer_norm")
    benchmark.pedantic(fwd_bwd, args=(module, x), rounds=ROUNDS, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("anchor", ["nn.RMSNorm", "F.layer_norm"])
def test_norm_anchor(benchmark, anchor):
    x = make_input()
    module = nn.RMSNorm(SHAPE[-1], eps=EPS) if anchor == "nn.RMSNorm" else LayerNorm(SHAPE[-1])
    benchmark.extra_info.update(shape=list(SHAPE))
    benchmark.pedantic(fwd_bwd, args=(module, x), rounds=ROUNDS, iterations=1, warmup_rounds=1)
