"""matryoshka: weighted sum over re-normalised prefixes vs the float64 formulas."""

from __future__ import annotations

import warnings

import pytest
import torch

from conan_core.errors import ConanError, ConfigError
from conan_core.losses.base import LossInputError
from conan_core.losses.matryoshka import MatryoshkaDimsWarning
from conan_core.registries import REGISTRIES
from tests.losses import loss_oracle as ref


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
    assert loss.dims_for(8) == [(2, 0.5), (4, 1.5), (8, 1.0)]  # the full size is included by default
    ids = dict(positive_ids=torch.tensor([1, 2, 1, 3]), negative_ids=torch.tensor([[2, 5], [6, 7], [8, 9], [1, 4]]))
    with pytest.warns(MatryoshkaDimsWarning) as caught:
        out = loss(q, p, neg, **ids)
    text = " | ".join(str(w.message) for w in caught)
    assert "dims [16, 32] exceed the embedding size 8" in text and "full size 8 is not in dims" in text
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
    with pytest.warns(MatryoshkaDimsWarning, match="full size 8"):
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


def test_added_and_skipped_dims_warn_once_naming_them():
    q, p, _ = data(5, h=8)
    loss = build(dims=[2, 4, 16])
    with pytest.warns(MatryoshkaDimsWarning) as caught:
        loss(q, p)
    text = " | ".join(str(w.message) for w in caught)
    assert "dims [16] exceed the embedding size 8" in text and "full size 8 is not in dims [2, 4, 16]" in text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss(q, p)  # second step: already reported
        build(dims=[2, 4, 8])(q, p)  # nothing added or skipped: silent


def test_strict_refuses_added_or_skipped_dims():
    q, p, _ = data(6, h=8)
    with pytest.raises(ConanError, match=r"strict.*full size 8"):
        build(dims=[2, 4], strict=True)(q, p)
    with pytest.raises(ConanError, match=r"strict.*dims \[16\] exceed"):
        build(dims=[2, 8, 16], strict=True)(q, p)
    with pytest.raises(ConanError, match="nothing would be trained"):
        build(dims=[16], include_full=False)(q, p)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build(dims=[2, 8], strict=True)(q, p)
        build(dims=[2, 4], strict=True, include_full=False)(q, p)  # only the listed dims, as asked


def test_the_tiny_preset_dims_are_unchanged():
    """dims [16, 32, 64] on 64-d embeddings: no warning and the plain sum of the three prefixes."""
    q, p, neg = data(7, h=64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = build(dims=[16, 32, 64])(q, p, neg)
    want = sum(ref.info_nce(q[:, :d], p[:, :d], neg[..., :d]) for d in (16, 32, 64))
    torch.testing.assert_close(out.loss, want, rtol=1e-12, atol=1e-12)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("dims", [[16, 32, 64], [16, 32], [8, 48]])
def test_equals_sentence_transformers_matryoshka_with_the_same_dims(dims):
    """sentence-transformers' MatryoshkaLoss around MultipleNegativesRankingLoss (scale 20) on the
    same embeddings: equal to ours with include_full off (ST never adds the full size) and with
    the full size listed; the default adds 64 when it is missing, as the warning says."""
    import logging

    from sentence_transformers.sentence_transformer import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.modules import Module

    class Given(Module):
        """Passes precomputed embeddings through as the sentence embedding."""

        config_keys: list[str] = []

        def forward(self, features):
            return {**features, "sentence_embedding": features["embedding"]}

        def get_sentence_embedding_dimension(self):
            return 64

        def save(self, *args, **kwargs):
            return None

    g = torch.Generator().manual_seed(8)
    q, p = torch.randn(8, 64, generator=g), torch.randn(8, 64, generator=g)
    model = SentenceTransformer(modules=[Given()], device="cpu")
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)  # its "64 not in dims" note
    theirs = MatryoshkaLoss(model, MultipleNegativesRankingLoss(model, scale=20.0), dims)(
        [{"embedding": q}, {"embedding": p}], None)
    ours = build(dims=dims, include_full=False, loss={"type": "info_nce", "temperature": 0.05})(q, p)
    torch.testing.assert_close(ours.loss, theirs, rtol=1e-5, atol=1e-5)
    if 64 not in dims:
        with pytest.warns(MatryoshkaDimsWarning, match="full size 64"):
            added = build(dims=dims)(q, p)
        full = MatryoshkaLoss(model, MultipleNegativesRankingLoss(model, scale=20.0), dims + [64])(
            [{"embedding": q}, {"embedding": p}], None)
        torch.testing.assert_close(added.loss, full, rtol=1e-5, atol=1e-5)
