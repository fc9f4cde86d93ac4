"""Masks: the soft-mask formula (RECIPE §3), its exact endpoints, padding rules and derived forms."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from conan_core.errors import ConfigError
from conan_core.masks.base import MaskContext
from conan_core.registries import REGISTRIES

MASKS = REGISTRIES["masks"]


def build(key: str, **fields):
    return MASKS.build({"type": key, **fields})


def random_ctx(gen: torch.Generator, batch: int = 4, seq_len: int = 11, alpha: float = 0.0, padded=True):
    lo = 1 if padded else seq_len
    lengths = torch.randint(lo, seq_len + 1, (batch,), generator=gen)
    if padded:
        lengths[0] = seq_len  # one full row, the rest random
    return MaskContext(lengths, seq_len, alpha=alpha)


def soft_formula(alpha: float, length: int, seq_len: int, scaling: str = "l_over_i") -> list[list[float]]:
    """RECIPE §3 written out with 1-based Python loops, plus the documented padding rules."""
    rows = []
    for i in range(1, seq_len + 1):
        row = []
        for j in range(1, seq_len + 1):
            if i > length:
                row.append(1.0 if j == 1 else 0.0)
            elif j > length:
                row.append(0.0)
            elif i >= j:
                row.append(1.0)
            else:
                row.append(min(alpha * length / i if scaling == "l_over_i" else alpha * i / length, 1.0))
        rows.append(row)
    return rows


def test_soft_alpha_zero_is_exactly_causal_and_one_is_exactly_bidirectional():
    gen = torch.Generator().manual_seed(0)
    soft, causal, bidir = build("soft"), build("causal"), build("bidirectional")
    for dtype in (torch.float32, torch.float64):
        for _ in range(5):
            ctx0 = random_ctx(gen, alpha=0.0)
            ctx1 = MaskContext(ctx0.lengths, ctx0.seq_len, alpha=1.0)
            assert torch.equal(soft.matrix(ctx0, dtype), causal.matrix(ctx0, dtype))
            assert torch.equal(soft.matrix(ctx1, dtype), bidir.matrix(ctx1, dtype))
            assert torch.equal(soft.bias(ctx0, dtype), causal.bias(ctx0, dtype))
            assert torch.equal(soft.bias(ctx1, dtype), bidir.bias(ctx1, dtype))


def test_soft_hand_computed_small_case():
    soft = build("soft")
    ctx = MaskContext(torch.tensor([4]), 4, alpha=0.25)
    expected = torch.tensor([[1, 1, 1, 1],            # i=1: 0.25*4/1 = 1
                             [1, 1, 0.5, 0.5],        # i=2: 0.25*4/2
                             [1, 1, 1, 1 / 3],        # i=3: 0.25*4/3
                             [1, 1, 1, 1]], dtype=torch.float64)
    assert torch.allclose(soft.matrix(ctx, torch.float64)[0], expected, rtol=0, atol=1e-15)
    i_over_l = build("soft", row_scaling="i_over_l")
    ctx = MaskContext(torch.tensor([4]), 4, alpha=0.5)
    expected = torch.tensor([[1, 0.125, 0.125, 0.125],  # 0.5*1/4
                             [1, 1, 0.25, 0.25],        # 0.5*2/4
                             [1, 1, 1, 0.375],          # 0.5*3/4
                             [1, 1, 1, 1]], dtype=torch.float64)
    assert torch.allclose(i_over_l.matrix(ctx, torch.float64)[0], expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("scaling", ["l_over_i", "i_over_l"])
def test_soft_matches_formula_on_random_lengths_and_alphas(scaling):
    gen = torch.Generator().manual_seed(1)
    soft = build("soft", row_scaling=scaling)
    for _ in range(6):
        alpha = float(torch.rand((), generator=gen))
        ctx = random_ctx(gen, alpha=alpha)
        got = soft.matrix(ctx, torch.float64)
        for b, length in enumerate(ctx.lengths.tolist()):
            want = torch.tensor(soft_formula(alpha, length, ctx.seq_len, scaling), dtype=torch.float64)
            assert torch.allclose(got[b], want, rtol=1e-15, atol=0)
        assert float(got.min()) >= 0.0 and float(got.max()) <= 1.0


def test_soft_i_over_l_never_reaches_bidirectional():
    ctx = MaskContext(torch.tensor([6]), 6, alpha=1.0)
    m = build("soft", row_scaling="i_over_l").matrix(ctx)
    assert float(m[0, 0, 1]) == pytest.approx(1 / 6)
    assert build("soft", row_scaling="i_over_l").exact_kind(ctx) is None


def test_earlier_rows_open_first():
    # the paper's prose: as alpha grows, rows become all ones from the top
    soft = build("soft")
    ctx = MaskContext(torch.tensor([10]), 10, alpha=0.35)
    full_rows = (soft.matrix(ctx)[0] == 1).all(dim=1).tolist()
    first_partial = full_rows.index(False)
    assert all(full_rows[:first_partial]) and full_rows[first_partial] is False
    assert first_partial == math.floor(0.35 * 10)  # rows i <= alpha*l are fully open


@pytest.mark.parametrize("key", ["causal", "bidirectional", "soft", "document"])
def test_padding_rules(key):
    gen = torch.Generator().manual_seed(2)
    mask = build(key)
    ctx = random_ctx(gen, batch=5, alpha=0.4)
    m = mask.matrix(ctx)
    assert m.shape == (5, ctx.seq_len, ctx.seq_len) and m.dtype == torch.float32
    for b, length in enumerate(ctx.lengths.tolist()):
        assert torch.all(m[b, :length, length:] == 0)  # padding keys closed for real queries
        pad_rows = m[b, length:]
        assert torch.all(pad_rows[:, 0] == 1) and torch.all(pad_rows[:, 1:] == 0)
        assert torch.all(m[b].sum(dim=1) > 0)  # no fully closed row


def test_bias_is_log_matrix_with_minus_inf_for_closed():
    gen = torch.Generator().manual_seed(3)
    soft = build("soft")
    ctx = random_ctx(gen, alpha=0.3)
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        bias = soft.bias(ctx, dtype)
        assert bias.shape == (ctx.batch_size, 1, ctx.seq_len, ctx.seq_len) and bias.dtype == dtype
        m = soft.matrix(ctx, torch.float64)
        closed = m == 0
        assert torch.all(torch.isneginf(bias[:, 0][closed]))
        assert torch.allclose(bias[:, 0][~closed].double(), m[~closed].log(), atol=0.02 if dtype == torch.bfloat16 else 1e-6)


def test_log_bias_equals_scaling_exp_scores_and_renormalising_float64():
    gen = torch.Generator().manual_seed(4)
    soft = build("soft")
    ctx = random_ctx(gen, alpha=0.45)
    scores = torch.randn(ctx.batch_size, 3, ctx.seq_len, ctx.seq_len, generator=gen, dtype=torch.float64) * 3
    p_bias = torch.softmax(scores + soft.bias(ctx, torch.float64), dim=-1)
    w = torch.exp(scores) * soft.matrix(ctx, torch.float64).unsqueeze(1)
    p_scale = w / w.sum(dim=-1, keepdim=True)
    p_prob = torch.softmax(scores, dim=-1) * soft.matrix(ctx, torch.float64).unsqueeze(1)
    p_prob = p_prob / p_prob.sum(dim=-1, keepdim=True)
    assert torch.allclose(p_bias, p_scale, rtol=1e-12, atol=1e-14)
    assert torch.allclose(p_bias, p_prob, rtol=1e-12, atol=1e-14)


def test_exact_kind():
    full = torch.tensor([6, 6])
    padded = torch.tensor([6, 3])
    soft, i_over_l = build("soft"), build("soft", row_scaling="i_over_l")
    assert soft.exact_kind(MaskContext(full, 6, alpha=0.0)) == "causal"
    assert soft.exact_kind(MaskContext(full, 6, alpha=1.0)) == "bidirectional"
    assert soft.exact_kind(MaskContext(full, 6, alpha=0.5)) is None
    assert i_over_l.exact_kind(MaskContext(full, 6, alpha=1.0)) is None
    assert i_over_l.exact_kind(MaskContext(full, 6, alpha=0.0)) == "causal"
    for key in ("soft", "causal", "bidirectional", "document"):
        assert build(key).exact_kind(MaskContext(padded, 6, alpha=0.0)) is None
    assert build("causal").exact_kind(MaskContext(full, 6)) == "causal"
    assert build("bidirectional").exact_kind(MaskContext(full, 6)) == "bidirectional"
    assert soft.has_fractional(MaskContext(full, 6, alpha=0.5))
    assert not soft.has_fractional(MaskContext(padded, 6, alpha=0.0))
    assert not soft.has_fractional(MaskContext(padded, 6, alpha=1.0))
    assert i_over_l.has_fractional(MaskContext(full, 6, alpha=1.0))


def test_document_mask_is_block_diagonal_causal():
    seg = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2],
                        [5, 5, 7, 7, 7, 7, 9, 9]])
    ctx = MaskContext(torch.tensor([8, 6]), 8, segment_ids=seg)
    m = build("document").matrix(ctx)
    for b, length in enumerate(ctx.lengths.tolist()):
        for i in range(8):
            for j in range(8):
                if i >= length:
                    want = 1.0 if j == 0 else 0.0
                else:
                    want = float(j < length and j <= i and seg[b, i] == seg[b, j])
                assert float(m[b, i, j]) == want, (b, i, j)
    bidir = build("document", within="bidirectional").matrix(ctx)
    assert torch.equal(bidir[0, :3, :3], torch.ones(3, 3)) and float(bidir[0, 0, 3]) == 0.0
    # without segment ids a row is one document
    plain = MaskContext(torch.tensor([8, 5]), 8)
    assert torch.equal(build("document").matrix(plain), build("causal").matrix(plain))
    assert build("document").exact_kind(MaskContext(torch.tensor([8, 8]), 8, segment_ids=seg)) is None
    one_doc = MaskContext(torch.tensor([8]), 8, segment_ids=torch.full((1, 8), 3))
    assert build("document").exact_kind(one_doc) == "causal"
    assert build("document", within="bidirectional").exact_kind(one_doc) == "bidirectional"


@pytest.mark.parametrize("key", ["soft", "causal", "document"])
def test_flex_mods_agree_with_matrix(key):
    from torch.nn.attention.flex_attention import create_mask

    gen = torch.Generator().manual_seed(5)
    mask = build(key)
    ctx = random_ctx(gen, batch=3, seq_len=9, alpha=0.3)
    n = ctx.seq_len
    b = torch.arange(3).view(-1, 1, 1, 1)
    h = torch.zeros(1, 1, 1, 1, dtype=torch.long)
    i = torch.arange(n).view(1, 1, -1, 1)
    j = torch.arange(n).view(1, 1, 1, -1)
    scores = torch.randn(3, 1, n, n, generator=gen)
    got = mask.score_mod(ctx)(scores, b, h, i, j)
    assert torch.allclose(got, scores + mask.bias(ctx, torch.float32), atol=1e-6)
    dense = create_mask(mask.mask_mod(ctx), 3, 1, n, n, device="cpu")
    assert torch.equal(dense[:, 0], mask.matrix(ctx) > 0)
    block = mask.block_mask(ctx, block_size=4)
    assert block.shape == (3, 1, n, n)


def test_soft_mask_alpha_uses_its_schedule():
    soft = build("soft", schedule={"type": "accelerating"})
    assert soft.alpha(50, 100) == pytest.approx(0.25)
    assert soft.alpha(100, 100) == 1.0
    assert build("soft").alpha(30, 100) == pytest.approx(0.3)
    assert build("causal").alpha(30, 100) == 0.0
    assert build("bidirectional").alpha(30, 100) == 1.0
    assert build("soft", apply="prob_scale").apply == "prob_scale"
    assert build("soft").apply == "log_bias" and build("causal").apply == "log_bias"


def test_config_errors_name_the_path():
    with pytest.raises(ConfigError) as err:
        MASKS.build({"type": "soft", "row_scaling": "l_over_j"})
    assert "row_scaling" in str(err.value)
    with pytest.raises(ConfigError) as err:
        MASKS.build({"type": "soft", "schedule": {"type": "linear", "warmup": 3}}, path="embed.mask")
    assert "embed.mask.schedule.warmup" in str(err.value)
    with pytest.raises(ConfigError) as err:
        MASKS.build({"type": "soft", "schedule": {"type": "linaer"}})
    assert "linear" in str(err.value)


def test_context_validation():
    with pytest.raises(ValueError, match="1-D"):
        MaskContext(torch.tensor([[3]]), 4)
    with pytest.raises(ValueError, match="alpha"):
        MaskContext(torch.tensor([3]), 4, alpha=1.5)
    with pytest.raises(ValueError, match="segment_ids"):
        MaskContext(torch.tensor([3]), 4, segment_ids=torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="seq_len"):
        MaskContext(torch.tensor([5]), 4).padded()
    assert MaskContext(torch.tensor([4, 2]), 4).padded() and not MaskContext(torch.tensor([4]), 4).padded()
    ctx = MaskContext(torch.tensor([3]), 4, alpha=0.2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.alpha = 0.5  # backends cache per context: a context never changes
