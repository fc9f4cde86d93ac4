"""Soft-mask attention on CPU (fp32, fwd+bwd) against SDPA anchors measured in the same run.

Anchors: SDPA without a mask and SDPA ``is_causal`` (fused kernels, no bias). Candidates: the soft
mask (alpha = 0.3, RECIPE §3) through the ``sdpa`` backend (float bias, the CPU training path) and
through the ``eager`` backend. Each candidate row times itself and both anchors in interleaved
rounds (``interleave.py``: ABBA order, warm-up excluded) and stores the per-round ratios
``soft_over_sdpa_none`` / ``soft_over_sdpa_causal`` (median and spread) in ``benchmark.extra_info``;
before timing it checks the backend against the float64 reference.

Shapes: B=8, H=8, D=64, L=512; ``CONAN_BENCH_FULL=1`` adds L=2048. About 0.27 s per fwd+bwd on
one core, so the guarded sdpa row takes 16 rounds (~13 s), the unguarded eager row 4.
"""

from __future__ import annotations

import os

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
ROUNDS = {"sdpa": 16, "eager": 4}


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
@pytest.mark.parametrize("backend_key", ["sdpa", "eager"])
def test_soft_mask_attention(benchmark, interleave, seq_len, backend_key):
    q, k, v, ctx = make_inputs(seq_len)
    mask = REGISTRIES["masks"].build({"type": "soft"})
    backend = REGISTRIES["attention"].build({"type": backend_key})

    def soft(a, b, c, context=ctx):
        return backend(a, b, c, mask=mask, ctx=context)

    check_against_float64(soft, q, k, v, mask, ctx)
    assert backend_key != "sdpa" or backend.last_path == "bias"  # alpha=0.3 is not a fast path

    fns = {"soft": lambda: fwd_bwd(soft, q, k, v), "sdpa_none": lambda: fwd_bwd(sdpa_none, q, k, v),
           "sdpa_causal": lambda: fwd_bwd(sdpa_causal, q, k, v)}
    rounds = benchmark.pedantic(interleave.interleave, args=(fns,), kwargs={"rounds": ROUNDS[backend_key]},
                                rounds=1, iterations=1)
    info = benchmark.extra_info
    info.update(seq_len=seq_len, batch=B, heads=H, head_dim=D, alpha=ALPHA, backend=backend_key,
                threads=torch.get_num_threads(), medians_s=rounds.medians())
    stats = {"soft_over_sdpa_none": rounds.ratio("soft", "sdpa_none"),
             "soft_over_sdpa_causal": rounds.ratio("soft", "sdpa_causal")}
    for key, value in stats.items():
        interleave.record(info, key, value)
    med = rounds.medians()
    print(f"\nsoft mask ({backend_key}) L={seq_len}: {med['soft'] * 1e3:.1f} ms fwd+bwd (SDPA no-mask "
          f"{med['sdpa_none'] * 1e3:.1f} ms, is_causal {med['sdpa_causal'] * 1e3:.1f} ms); "
          + "; ".join(interleave.describe(k, v) for k, v in stats.items()))
