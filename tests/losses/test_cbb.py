"""cbb in one process (a world of 1) vs the float64 formula; the 2-rank case is test_distributed_gather.py."""

from __future__ import annotations

import pytest
import torch

from conan_core.losses.base import LossInputError
from conan_core.registries import REGISTRIES

import loss_oracle as ref


def data(seed, b=4, n=2, h=6, s=5):
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)  # noqa: E731
    return rnd(b, h), rnd(b, h), rnd(b, n, h), (rnd(s, h), rnd(s, h), torch.rand(s, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("weight", [0.8, 0.3])
def test_info_nce_plus_weighted_cosent(weight):
    for seed in range(3):
        q, p, neg, sts = data(seed)
        ids = dict(positive_ids=torch.tensor([1, 2, 3, 4]), negative_ids=torch.tensor([[2, 9], [8, 7], [6, 5], [4, 4]]))
        loss = REGISTRIES["losses"].build({"type": "cbb", "cosent_weight": weight, "temperature": 0.1,
                                           "cosent_tau": 0.2})
        out = loss(q, p, neg, sts=sts, **ids)
        want = ref.info_nce(q, p, neg, temperature=0.1, **ids) + weight * ref.cosent(*sts, tau=0.2)
        torch.testing.assert_close(out.loss, want, rtol=1e-12, atol=1e-12)
        ts = (q, p, neg, sts[0], sts[1])
        for g, w in zip(torch.autograd.grad(out.loss, ts), torch.autograd.grad(want, ts)):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
        assert out.neg_scores.shape == (4, 2)
        assert {"info_nce", "cosent", "accuracy"} <= set(out.metrics)


def test_without_sts_or_negatives():
    q, p, neg, _ = data(1)
    loss = REGISTRIES["losses"].build("cbb")
    torch.testing.assert_close(loss(q, p, neg).loss, ref.info_nce(q, p, neg), rtol=1e-12, atol=1e-12)
    out = loss(q, p)
    torch.testing.assert_close(out.loss, ref.info_nce(q, p), rtol=1e-12, atol=1e-12)
    assert out.neg_scores is None


def test_defaults_and_errors():
    spec = REGISTRIES["losses"].default_spec("cbb")
    assert (spec["temperature"], spec["cosent_weight"], spec["cosent_tau"]) == (0.05, 0.8, 0.05)
    q, p, neg, sts = data(0)
    with pytest.raises(LossInputError, match="sts must be a tuple"):
        REGISTRIES["losses"].build("cbb")(q, p, neg, sts=sts[:2])
    with pytest.raises(LossInputError, match="negatives"):
        REGISTRIES["losses"].build("cbb")(q, p, neg[:2])
