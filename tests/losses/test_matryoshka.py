"""matryoshka: weighted sum over re-normalised prefixes vs the float64 formulas."""

from __future__ import annotations

from tests.losses import loss_oracle as ref
import pytest
import torch

from conan_core.errors import ConfigError
from conan_core.losses.base import LossInputError
from conan_core.registries import REGISTRIES


def build(**fields):
    return REGISTRIES["contrastive_losses"].build({"type": "matryoshka", **fields})


def data(seed, b=4, n=2, h=8):
    g = torch.Generator().manual_seed(seed)
    q, p = (torch.randn(b, h, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    neg = torch.randn(b, n, h, generator=g, dtype=torch.float64, requires_grad=True)
    return q, p, neg


def test_info_nce_prefixes_match_formula_with_skipped_dims_and_weights():
    q, p, neg = data(0)
    loss = build(dims=[2, 4, 16, 32], weights=[0.5, 1.5, 9.0, 9.0])  # 16 and 32 exceed H = 8: skipped
    assert loss.dims_for(8) == [(2, 0.5), (4, 1.5), (8, 1.0)]  # the full size is always included
    ids = dict(positive_ids=torch.tensor([1, 2, 1, 3]), negative_ids=torch.tensor([[2, 5], [6, 7], [8, 9], [1, 4]]))
    out = loss(q, p, neg, **ids)
    want = sum(w * ref.info_nce(q[:, :d], p[:, :d], neg[..., :d], **ids) for d, w in [(2, 0.5), (4, 1.5), (8, 1.0)])
    torch.testing.assert_close(out.loss, want, rtol=1e-12, atol=1e-12)
    for g, w in zip(torch.autograd.grad(out.loss, (q, p, neg)), torch.autograd.grad(want, (q, p, neg))):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    # neg_scores of the full size, and one metric per dim
    full = REGISTRIES["contrastive_losses"].build("info_nce")(q, p, neg, **ids)
    torch.testing.assert_close(out.neg_scores, full.neg_scores)
    assert {"loss@2", "loss@4", "loss@8"} <= set(out.metrics)


def test_paper_dims_default_equal_weights():
    spec = REGISTRIES["contrastive_losses"].default_spec("matryoshka")
    assert spec["dims"] == [256, 512, 1024, 1536, 2048, 3072, 3584] and spec["weights"] is None
    loss = build()
    assert loss.dims_for(3584) == [(d, 1.0) for d in spec["dims"]]
    assert loss.dims_for(32) == [(32, 1.0)]  # a tiny model trains at its full size only


def test_wraps_any_contrastive_loss_slicing_only_embeddings():
    q, p, neg = data(4)
    ids = dict(positive_ids=torch.tensor([1, 2, 3, 4]), negative_ids=torch.arange(10, 10 + neg.shape[0] * neg.shape[1])
               .view(neg.shape[0], neg.shape[1]))
    out = build(loss="cbb", dims=[4])(q, p, neg, **ids)
    want = sum(ref.info_nce(q[:, :d], p[:, :d], neg[..., :d], **ids) for d in (4, 8))
    torch.testing.assert_close(out.loss, want, rtol=1e-12, atol=1e-12)


def test_a_pair_loss_is_refused_in_the_contrastive_slot():
    with pytest.raises(ConfigError, match="'cosent' is a pair_losses key, and this slot takes contrastive_losses"):
        build(loss="cosent")


def test_config_and_input_errors():
    with pytest.raises(ConfigError, match="one weight per dim"):
        build(dims=[2, 4], weights=[1.0])
    with pytest.raises(ConfigError, match="loss.temperature"):
        build(loss={"type": "info_nce", "temperature": -1})
    with pytest.raises(ConfigError, match="infonse"):
        build(loss="infonse")
    q, p, neg = data(0)
    with pytest.raises(LossInputError, match="one size"):
        build()(q, p[:, :4])
