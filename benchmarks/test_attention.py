"""Soft-mask attention on CPU (fp32, fwd+bwd) against SDPA anchors measured in the same run.

Rows: SDPA without a mask and SDPA ``is_causal`` (the anchors: fused kernels, no bias), the soft
mask (alpha = 0.3, RECIPE §3) through the ``sdpa`` backend (float bias, the CPU training path) and
through the ``eager`` backend. The soft rows time the anchors too, interleaved round by round (the
machine is shared, so interleaving cancels drift), and store ``soft / anchor`` median-time ratios
in ``benchmark.extra_info``; before timing they check the backend against the float64 reference.

Shapes: B=8, H=8, D=64, L=512; ``CONAN_BENCH_FULL=1`` adds L=2048.
"""

from __future__ import annotations

import os
import statistics
import time

import pytest
import torch
import torch.nn.functional as F

from conan_core.masks.base import MaskContext
from conan_core.ops.attention.reference import reference_attention
from conan_core.registries import REGISTRIES

FULL = os.environ.get("CONAN_BENCH_FULL", "") == "1"
LENGTHS = [512, 2048] if FULL else [512]
B, H, D = 8, 8, 64
ALPHA = 0.3
ROUNDS = 5 if FULL else 3


def make_inputs(seq_len: int):
    gen = torch.Generator().manual_seed(seq_len)
    q, k, v = (torch.randn(B, H, seq_len, D, generator=gen).requires_grad_() for _ in range(3))
    ctx = MaskContext(torch.full((B,), seq_len), seq_len, alpha=ALPHA)
    return q, k, v, ctx


def fwd_bwd(fn, q, k, v):
    for t in (q, k, v):
        t.grad = None
    out = fn(q, k, v)
    out.backward(torch.ones_like(out))
    return out


def interleaved_medians(fns: dict, q, k, v, rounds: int = ROUNDS) -> dict[str, float]:
    """Median seconds of fwd+bwd per function, timing them round-robin."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up (allocator, thread pool)
        fwd_bwd(fn, q, k, v)
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fwd_bwd(fn, q, k, v)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def sdpa_none(q, k, v):
    return F.scaled_dot_product_attention(q, k, v)


def sdpa_causal(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def check_against_float64(fn, q, k, v, mask, ctx):
    """Forward and q-gradient of ``fn`` on a slice (1 sequence, 2 heads) vs the float64 reference."""
    qs, ks, vs = (t.detach()[:1, :2].clone().requires_grad_() for t in (q, k, v))
    sub = MaskContext(ctx.lengths[:1], ctx.seq_len, alpha=ctx.alpha)
    out = fwd_bwd(lambda a, b, c: fn(a, b, c, sub), qs, ks, vs)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (qs, ks, vs))
    ref = fwd_bwd(lambda a, b, c: reference_attention(a, b, c, mask=mask, ctx=sub), q64, k64, v64)
    assert torch.allclose(out.double(), ref, atol=1e-4, rtol=1e-4), (out.double() - ref).abs().max()
    assert torch.allclose(qs.grad.double(), q64.grad, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("seq_len", LENGTHS)
@pytest.mark.parametrize("anchor", ["none", "causal"])
def test_sdpa_anchor(benchmark, seq_len, anchor):
    q, k, v, _ = make_inputs(seq_len)
    fn = sdpa_none if anchor == "none" else sdpa_causal
    benchmark.extra_info.update(seq_len=seq_len, batch=B, heads=H, head_dim=D)
    benchmark.pedantic(fwd_bwd, args=(fn, q, k, v), rounds=ROUNDS, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("seq_len", LENGTHS)
@pytest.mark.parametrize("backend_key", ["sdpa", "eager"])
def test_soft_mask_attention(benchmark, seq_len, backend_key):
    q, k, v, ctx = make_inputs(seq_len)
    mask = REGISTRIES["masks"].build({"type": "soft"})
    backend = REGISTRIES["attention"].build({"type": backend_key})

    def soft(a, b, c, context=ctx):
        return backend(a, b, c, mask=mask, ctx=context)

    check_against_float64(soft, q, k, v, mask, ctx)
    assert backend_key != "sdpa" or backend.last_path == "bias"  # alpha=0.3 is not a fast path

    medians = interleaved_medians({"soft": lambda a, b, c: soft(a, b, c), "sdpa_none": sdpa_none,
                                   "sdpa_causal": sdpa_causal}, q, k, v)
    ratios = {"soft_over_sdpa_none": medians["soft"] / medians["sdpa_none"],
              "soft_over_sdpa_causal": medians["soft"] / medians["sdpa_causal"]}
    benchmark.extra_info.update(seq_len=seq_len, batch=B, heads=H, head_dim=D, alpha=ALPHA,
                                backend=backend_key, medians_s=medians, **ratios)
    print(f"\nsoft mask ({backend_key}) L={seq_len}: {medians['soft'] * 1e3:.1f} ms fwd+bwd; "
          f"x{ratios['soft_over_sdpa_none']:.2f} vs SDPA no-mask "
          f"({medians['sdpa_none'] * 1e3:.1f} ms), x{ratios['soft_over_sdpa_causal']:.2f} vs SDPA "
          f"is_causal ({medians['sdpa_causal'] * 1e3:.1f} ms)")
    benchmark.pedantic(fwd_bwd, args=(lambda a, b, c: soft(a, b, c), q, k, v), rounds=ROUNDS,
                       iterations=1, warmup_rounds=1)
