"""Attention backends vs the float64 reference: forward, backward, GQA, padding, dispatch."""

from __future__ import annotations

import zlib

import pytest
import torch

from conan_core.masks.base import MaskContext
from conan_core.ops.attention.base import repeat_kv, select_backend
from conan_core.ops.attention.flex import FlexUnavailableError
from conan_core.ops.attention.reference import reference_attention
from conan_core.registries import REGISTRIES

BACKENDS = ["eager", "sdpa", "flex"]
MASK_CASES = {
    "soft_0.3": ({"type": "soft"}, 0.3),
    "soft_0": ({"type": "soft"}, 0.0),
    "soft_1": ({"type": "soft"}, 1.0),
    "soft_prob_scale": ({"type": "soft", "apply": "prob_scale"}, 0.6),
    "soft_i_over_l": ({"type": "soft", "row_scaling": "i_over_l"}, 0.7),
    "causal": ({"type": "causal"}, 0.0),
    "bidirectional": ({"type": "bidirectional"}, 0.0),
    "document": ({"type": "document"}, 0.0),
}


def make_inputs(seed: int, *, padded: bool, groups: int = 2, batch: int = 3, seq_len: int = 10,
                kv_heads: int = 2, dim: int = 8, alpha: float = 0.0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, kv_heads * groups, seq_len, dim, generator=gen).to(dtype)
    k = torch.randn(batch, kv_heads, seq_len, dim, generator=gen).to(dtype)
    v = torch.randn(batch, kv_heads, seq_len, dim, generator=gen).to(dtype)
    if padded:
        lengths = torch.randint(1, seq_len, (batch,), generator=gen)
        lengths[0] = seq_len
    else:
        lengths = torch.full((batch,), seq_len)
    # packed rows: 1-3 documents per row (read only by the document mask)
    cuts = torch.randint(0, 3, (batch, seq_len), generator=gen) == 0
    segment_ids = torch.cumsum(cuts.long(), dim=1)
    ctx = MaskContext(lengths, seq_len, alpha=alpha, segment_ids=segment_ids)
    return q, k, v, ctx


def backend(key: str, **fields):
    return REGISTRIES["attention"].build({"type": key, **fields})


def grads(fn, q, k, v, g):
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = fn(q, k, v)
    (out * g).sum().backward()
    return out.detach(), q.grad, k.grad, v.grad


@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
@pytest.mark.parametrize("case", list(MASK_CASES))
@pytest.mark.parametrize("key", BACKENDS)
def test_backend_matches_float64_reference_forward_and_backward(key, case, padded):
    spec, alpha = MASK_CASES[case]
    mask = REGISTRIES["masks"].build(spec)
    seed = zlib.crc32(f"{key}-{case}-{padded}".encode()) % 10_000
    q, k, v, ctx = make_inputs(seed, padded=padded, alpha=alpha)
    be = backend(key)
    g = torch.randn(q.shape, generator=torch.Generator().manual_seed(seed + 1))

    ref, *ref_grads = grads(lambda a, b, c: reference_attention(a, b, c, mask=mask, ctx=ctx),
                           q.double(), k.double(), v.double(), g.double())
    with torch.no_grad():
        out = be(q, k, v, mask=mask, ctx=ctx)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert torch.allclose(out.double(), ref, atol=1e-5, rtol=1e-5), (out.double() - ref).abs().max()
    if key == "flex":
        assert be.last_path == "flex_eager"

    out, *got = grads(lambda a, b, c: be(a, b, c, mask=mask, ctx=ctx), q, k, v, g)
    if key == "flex":  # no Flex backward on CPU in torch 2.13: the documented SDPA fallback
        assert be.last_path == "sdpa_fallback"
    assert torch.allclose(out.double(), ref, atol=1e-5, rtol=1e-5)
    for name, a, b in zip("qkv", got, ref_grads):
        assert torch.allclose(a.double(), b, atol=1e-5, rtol=1e-5), (name, (a.double() - b).abs().max())
    # padding keys are never attended: no gradient reaches padded k / v, whatever the loss reads
    dk, dv = got[1], got[2]
    for b, length in enumerate(ctx.lengths.tolist()):
        assert torch.all(dk[b, :, length:] == 0) and torch.all(dv[b, :, length:] == 0)


@pytest.mark.parametrize("key", BACKENDS)
def test_backend_bf16_on_cpu(key):
    mask = REGISTRIES["masks"].build({"type": "soft"})
    q, k, v, ctx = make_inputs(7, padded=True, alpha=0.3, dtype=torch.bfloat16, seq_len=16, dim=16)
    be = backend(key)
    g = torch.randn(q.shape, generator=torch.Generator().manual_seed(8))
    ref, *ref_grads = grads(lambda a, b, c: reference_attention(a, b, c, mask=mask, ctx=ctx),
                           q.double(), k.double(), v.double(), g.double())
    with torch.no_grad():
        out = be(q, k, v, mask=mask, ctx=ctx)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.double(), ref, atol=2e-2, rtol=2e-2), (out.double() - ref).abs().max()
    out, *got = grads(lambda a, b, c: be(a, b, c, mask=mask, ctx=ctx), q, k, v, g.bfloat16())
    for a, b in zip(got, ref_grads):
        assert torch.allclose(a.double(), b, atol=5e-2, rtol=2e-2), (a.double() - b).abs().max()


@pytest.mark.parametrize("groups", [1, 4])
def test_gqa_head_mapping(groups):
    # query head h reads kv head h // groups: same as running each head on expanded k/v
    mask = REGISTRIES["masks"].build({"type": "soft"})
    q, k, v, ctx = make_inputs(9, padded=True, groups=groups, alpha=0.5)
    kx, vx = repeat_kv(k, groups), repeat_kv(v, groups)
    assert torch.equal(kx[:, groups * 1], k[:, 1])
    for key in BACKENDS:
        with torch.no_grad():
            a = backend(key)(q, k, v, mask=mask, ctx=ctx)
            b = backend(key)(q, kx, vx, mask=mask, ctx=ctx)
        assert torch.allclose(a, b, atol=1e-6), key


def test_sdpa_dispatch_paths():
    soft = REGISTRIES["masks"].build({"type": "soft"})
    causal = REGISTRIES["masks"].build({"type": "causal"})
    bidir = REGISTRIES["masks"].build({"type": "bidirectional"})
    sdpa = backend("sdpa")
    full = MaskContext(torch.tensor([6, 6]), 6, alpha=0.0)
    padded = MaskContext(torch.tensor([6, 4]), 6, alpha=0.0)
    assert sdpa.plan(causal, full) == "causal" and sdpa.plan(bidir, full) == "none"
    assert sdpa.plan(soft, full) == "causal"
    assert sdpa.plan(soft, MaskContext(full.lengths, 6, alpha=1.0)) == "none"
    assert sdpa.plan(soft, MaskContext(full.lengths, 6, alpha=0.5)) == "bias"
    assert sdpa.plan(causal, padded) == "bias" and sdpa.plan(bidir, padded) == "bias"
    assert backend("sdpa", dispatch=False).plan(causal, full) == "bias"
    # the fast paths compute the same function as the bias path and the reference
    q, k, v, _ = make_inputs(11, padded=False, batch=2, seq_len=6)
    for mask, alpha, path in ((soft, 0.0, "causal"), (soft, 1.0, "none"), (causal, 0.0, "causal"),
                              (bidir, 0.0, "none")):
        ctx = MaskContext(full.lengths, 6, alpha=alpha)
        out = sdpa(q, k, v, mask=mask, ctx=ctx)
        assert sdpa.last_path == path
        ref = reference_attention(q, k, v, mask=mask, ctx=ctx)
        assert torch.allclose(out.double(), ref, atol=1e-5)


def test_eager_prob_scale_path_equals_log_bias_path():
    q, k, v, ctx = make_inputs(12, padded=True, alpha=0.45)
    log_mask = REGISTRIES["masks"].build({"type": "soft"})
    prob_mask = REGISTRIES["masks"].build({"type": "soft", "apply": "prob_scale"})
    eager = backend("eager")
    a = eager(q.double(), k.double(), v.double(), mask=log_mask, ctx=ctx)
    assert eager.last_path == "log_bias"
    b = eager(q.double(), k.double(), v.double(), mask=prob_mask, ctx=ctx)
    assert eager.last_path == "prob_scale"
    assert torch.allclose(a, b, atol=1e-13)


def test_flex_fallback_and_cache():
    mask = REGISTRIES["masks"].build({"type": "soft"})
    q, k, v, ctx = make_inputs(13, padded=True, alpha=0.3)
    flex = backend("flex")
    with torch.no_grad():
        flex(q, k, v, mask=mask, ctx=ctx)
        first = flex.planned(mask, ctx, q)
        assert flex.planned(mask, ctx, q) is first  # block mask reused across layers
    assert first.score_mod is not None and first.block_mask is not None  # fractional soft mask
    causal_plan = flex.prepare(REGISTRIES["masks"].build({"type": "causal"}), ctx, q.dtype, q.device)
    assert causal_plan.score_mod is None and causal_plan.path == "flex_eager"
    # grad mode on CPU: the SDPA fallback's plan is made with the Flex one, outside any compiled block
    assert causal_plan.fallback is not None and causal_plan.fallback.path == "bias"
    assert first.fallback is None  # planned under no_grad
    assert flex.needs_fallback(q.requires_grad_())
    with torch.no_grad():
        assert not flex.needs_fallback(q)
    strict = backend("flex", fallback="error")
    with pytest.raises(FlexUnavailableError, match="no backward"):
        strict(q, k, v, mask=mask, ctx=ctx)


def test_per_batch_objects_are_built_once_per_context():
    mask = REGISTRIES["masks"].build({"type": "soft"})
    q, k, v, ctx = make_inputs(15, padded=True, alpha=0.3)
    sdpa = backend("sdpa")
    calls = []
    for _ in range(3):  # three layers of one forward
        sdpa.per_batch(mask, ctx, "probe", lambda: calls.append(1) or len(calls))
        sdpa(q, k, v, mask=mask, ctx=ctx)
    assert len(calls) == 1
    plan = sdpa.per_batch(mask, ctx, ("plan", q.dtype, q.device), lambda: None)
    assert plan is not None and plan.path == "bias" and plan.bias.shape == (3, 1, 10, 10)
    new_ctx = MaskContext(ctx.lengths, ctx.seq_len, alpha=0.6)  # next step: new context, new bias
    sdpa(q, k, v, mask=mask, ctx=new_ctx)
    sdpa.per_batch(mask, new_ctx, "probe", lambda: calls.append(1) or len(calls))
    assert len(calls) == 2
    assert torch.allclose(sdpa(q, k, v, mask=mask, ctx=new_ctx).double(),
                          reference_attention(q, k, v, mask=mask, ctx=new_ctx), atol=1e-5)


@pytest.mark.parametrize("key", BACKENDS)
def test_prepare_then_attend_equals_one_call(key):
    """The model's split call (one plan per batch, attend per layer) is the one-call function."""
    mask = REGISTRIES["masks"].build({"type": "soft"})
    q, k, v, ctx = make_inputs(16, padded=True, alpha=0.4)
    be = backend(key)
    plan = be.prepare(mask, ctx, q.dtype, q.device)
    assert plan.backend is be and plan.mask is mask and plan.ctx is ctx
    with torch.no_grad():
        split = be.attend(q, k, v, plan, 1.0 / 8 ** 0.5)
        whole = backend(key)(q, k, v, mask=mask, ctx=ctx)
    assert torch.equal(split, whole)


def test_input_validation_and_select_backend():
    mask = REGISTRIES["masks"].build({"type": "causal"})
    q, k, v, ctx = make_inputs(14, padded=False)
    sdpa = backend("sdpa")
    with pytest.raises(ValueError, match="multiple"):
        sdpa(q[:, :3], k, v, mask=mask, ctx=ctx)
    with pytest.raises(ValueError, match="context"):
        sdpa(q[:, :, :5], k[:, :, :5], v[:, :, :5], mask=mask, ctx=ctx)
    with pytest.raises(ValueError, match="4-D"):
        sdpa(q[0], k, v, mask=mask, ctx=ctx)
    assert type(select_backend("auto", "cpu")).__name__ == "SDPAAttention"
    assert type(select_backend("auto", "cpu", requires_grad=False)).__name__ == "SDPAAttention"
    assert type(select_backend("auto", "cuda")).__name__ == "FlexAttentionBackend"
    assert type(select_backend("auto", "mps", requires_grad=True)).__name__ == "SDPAAttention"
    assert type(select_backend("auto", "mps", requires_grad=False)).__name__ == "FlexAttentionBackend"
    assert type(select_backend("eager")).__name__ == "EagerAttention"


def layout_inputs(seed: int, layout: str, *, batch: int = 3, seq_len: int = 10, kv_heads: int = 2,
                  groups: int = 2, dim: int = 8, alpha: float = 0.0):
    """q/k/v and a context with left padding and holes (``"any"``) or with 3 queries after 7
    cached keys, right-padded (``"cached"``)."""
    gen = torch.Generator().manual_seed(seed)
    q_len = 3 if layout == "cached" else seq_len
    q = torch.randn(batch, kv_heads * groups, q_len, dim, generator=gen)
    k = torch.randn(batch, kv_heads, seq_len, dim, generator=gen)
    v = torch.randn(batch, kv_heads, seq_len, dim, generator=gen)
    if layout == "cached":
        lengths = torch.tensor([seq_len, seq_len - 1, seq_len])
        return q, k, v, MaskContext(lengths, q_len, alpha=alpha, kv_len=seq_len)
    valid = torch.rand(batch, seq_len, generator=gen) < 0.75
    valid[0, :4], valid[0, 4:] = False, True  # left padding
    valid[:, -1] = True
    segment_ids = torch.cumsum((torch.randint(0, 3, (batch, seq_len), generator=gen) == 0).long(), dim=1)
    return q, k, v, MaskContext(valid.sum(-1), seq_len, alpha=alpha, segment_ids=segment_ids, valid=valid)


@pytest.mark.parametrize("layout", ["any", "cached"])
@pytest.mark.parametrize("case", ["soft_0.3", "soft_prob_scale", "causal", "bidirectional", "document"])
@pytest.mark.parametrize("key", BACKENDS)
def test_backend_matches_reference_for_any_padding_and_cached_keys(key, case, layout):
    spec, alpha = MASK_CASES[case]
    mask = REGISTRIES["masks"].build(spec)
    seed = zlib.crc32(f"{key}-{case}-{layout}".encode()) % 10_000
    q, k, v, ctx = layout_inputs(seed, layout, alpha=alpha)
    g = torch.randn(q.shape, generator=torch.Generator().manual_seed(seed + 1))
    ref, *ref_grads = grads(lambda a, b, c: reference_attention(a, b, c, mask=mask, ctx=ctx),
                           q.double(), k.double(), v.double(), g.double())
    with torch.no_grad():
        out = backend(key)(q, k, v, mask=mask, ctx=ctx)
    assert torch.allclose(out.double(), ref, atol=1e-5, rtol=1e-5), (out.double() - ref).abs().max()
    out, *got = grads(lambda a, b, c: backend(key)(a, b, c, mask=mask, ctx=ctx), q, k, v, g)
    for name, a, b in zip("qkv", got, ref_grads):
        assert torch.allclose(a.double(), b, atol=1e-5, rtol=1e-5), (name, (a.double() - b).abs().max())
    if layout == "any":  # no gradient reaches a padding key or value
        pad = ~ctx.valid
        assert torch.all(got[1].transpose(1, 2)[pad] == 0) and torch.all(got[2].transpose(1, 2)[pad] == 0)
