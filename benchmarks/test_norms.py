"""RMSNorm factories (fwd+bwd, fp32, CPU) against nn.RMSNorm and F.layer_norm in the same run.

Shape: [4096, 3584] (tokens x Conan-1.4B hidden size) with ``CONAN_BENCH_FULL=1``, [512, 3584]
otherwise. Each factory row checks its output against the float64 reference first, then times
itself and both anchors in interleaved rounds (``interleave.py``; the fastest of 3 calls per
round, warm-up excluded) and stores the per-round ratios ``over_nn_rmsnorm`` / ``over_layer_norm`` (median and
spread) in ``benchmark.extra_info``. The compiled row excludes compile time (the first call).
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conan_core.ops.norms.base import rms_norm_reference
from conan_core.registries import REGISTRIES

FULL = os.environ.get("CONAN_BENCH_FULL", "") == "1"
SHAPE = (4096, 3584) if FULL else (512, 3584)
# the compiled row is guarded in CI; the plain torch row is for reference
ROUNDS = {"compiled": 15 if FULL else 25, "torch": 10}
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



@pytest.mark.parametrize("key", ["torch", "compiled"])
def test_rms_norm_factory(benchmark, interleave, key):
    x = make_input()
    module = REGISTRIES["norms"].build({"type": key}).make(SHAPE[-1], EPS)
    with torch.no_grad():
        module.weight.copy_(1 + 0.1 * torch.randn(SHAPE[-1], generator=torch.Generator().manual_seed(1)))
    out = fwd_bwd(module, x)  # also the compile warm-up for "compiled"
    ref = rms_norm_reference(x.detach(), module.weight.detach(), EPS)
    assert torch.allclose(out.double(), ref, atol=1e-5, rtol=1e-5), (out.double() - ref).abs().max()

    modules = {key: module, "nn.RMSNorm": nn.RMSNorm(SHAPE[-1], eps=EPS), "F.layer_norm": LayerNorm(SHAPE[-1])}
    fns = {name: (lambda m=m: fwd_bwd(m, x)) for name, m in modules.items()}
    rounds = benchmark.pedantic(interleave.interleave, args=(fns,),
                                kwargs={"rounds": ROUNDS[key], "inner": 3, "reduce": "min"}, rounds=1, iterations=1)
    info = benchmark.extra_info
    info.update(shape=list(SHAPE), key=key, threads=torch.get_num_threads(), medians_s=rounds.medians())
    stats = {"over_nn_rmsnorm": rounds.ratio(key, "nn.RMSNorm"), "over_layer_norm": rounds.ratio(key, "F.layer_norm")}
    for name, value in stats.items():
        interleave.record(info, name, value)
    print(f"\nnorm {key} {list(SHAPE)}: {rounds.medians()[key] * 1e3:.2f} ms fwd+bwd; "
          + "; ".join(interleave.describe(k, v) for k, v in stats.items()))


@pytest.mark.parametrize("anchor", ["nn.RMSNorm", "F.layer_norm"])
def test_norm_anchor(benchmark, anchor):
    """The anchors alone (pytest-benchmark's own statistics; no ratio)."""
    x = make_input()
    module = nn.RMSNorm(SHAPE[-1], eps=EPS) if anchor == "nn.RMSNorm" else LayerNorm(SHAPE[-1])
    benchmark.extra_info.update(shape=list(SHAPE))
    benchmark.pedantic(fwd_bwd, args=(module, x), rounds=10, iterations=1, warmup_rounds=1)
