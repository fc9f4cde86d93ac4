"""cosent: formula vs a float64 double loop over pairs; stability at small tau; bf16 autocast."""

from __future__ import annotations

import math

import pytest
import torch

from conan_core.losses.base import LossInputError
from conan_core.registries import REGISTRIES

from tests.losses import loss_oracle as ref


def build(**fields):
    return REGISTRIES["pair_losses"].build({"type": "cosent", **fields})


def data(seed, b=6, h=5):
    g = torch.Generator().manual_seed(seed)
    e1 = torch.randn(b, h, generator=g, dtype=torch.float64, requires_grad=True)
    e2 = torch.randn(b, h, generator=g, dtype=torch.float64, requires_grad=True)
    scores = torch.randint(0, 4, (b,), generator=g).double()  # ties on purpose: they form no pair
    return e1, e2, scores


@pytest.mark.parametrize("tau", [0.05, 0.5])
def test_value_and_gradients_match_float64_formula(tau):
    for seed in range(4):
        e1, e2, scores = data(seed)
        out = build(tau=tau)(e1, e2, scores)
        want = ref.cosent(e1, e2, scores, tau=tau)
        torch.testing.assert_close(out.loss, want, rtol=1e-12, atol=1e-12)
        for g, w in zip(torch.autograd.grad(out.loss, (e1, e2)), torch.autograd.grad(want, (e1, e2))):
            torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)
        pairs = sum(int(a > b) for a in scores for b in scores)
        assert out.metrics["pairs"] == pairs
        assert out.neg_scores is None


def test_tiny_tau_and_reversed_order_is_finite():
    # gold order exactly reversed with cos spread over [-1, 1]: a naive exp((cos_j - cos_i)/tau) = exp(2000) overflows
    angles = torch.tensor([0.0, 1.0, 2.0, math.pi])  # cos = 1, 0.54, -0.42, -1: higher gold, lower cos
    e1 = torch.tensor([[1.0, 0.0]]).repeat(4, 1)
    e2 = torch.stack([angles.cos(), angles.sin()], 1).requires_grad_(True)
    scores = torch.tensor([0.0, 1.0, 2.0, 3.0])
    out = build(tau=1e-3)(e1, e2, scores)
    assert torch.isfinite(out.loss) and out.loss > 1000
    out.loss.backward()
    assert torch.isfinite(e2.grad).all()


def test_all_ties_give_zero():
    e1, e2, _ = data(1)
    out = build()(e1, e2, torch.ones(6, dtype=torch.float64))
    assert float(out.loss.detach()) == 0.0 and out.metrics["pairs"] == 0


def test_bf16_autocast_close_to_fp32():
    e1, e2, scores = (t.detach().float() for t in data(2, b=16, h=32))
    fp32 = build()(e1, e2, scores).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = build()(e1.bfloat16(), e2.bfloat16(), scores).loss
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, fp32, rtol=1e-2, atol=1e-2)


def test_bad_scores_shape():
    e1, e2, _ = data(0)
    with pytest.raises(LossInputError, match="scores"):
        build()(e1, e2, torch.ones(5))
    assert math.isclose(REGISTRIES["pair_losses"].default_spec("cosent")["tau"], 0.05)
