"""cbb in one process (a world of 1) vs the float64 formula; the 2-rank case is test_distributed_gather.py."""

from __future__ import annotations

import pytest
import torch

from conan_core.losses.base import LossInputError
from conan_core.registries import REGISTRIES

from tests.losses import loss_oracle as ref


def data(seed, b=4, n=2, h=6):
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)  # noqa: E731
    return rnd(b, h), rnd(b, h), rnd(b, n, h)


def test_one_process_is_info_nce_with_duplicate_masking():
    for seed in range(3):
        q, p, neg = data(seed)
        ids = dict(positive_ids=torch.tensor([1, 2, 3, 4]), negative_ids=torch.tensor([[2, 9], [8, 7], [6, 5], [4, 4]]))
        loss = REGISTRIES["contrastive_losses"].build({"type": "cbb", "temperature": 0.1})
        out = loss(q, p, neg, **ids)
        want = ref.info_nce(q, p, neg, temperature=0.1, **ids)
        torch.testing.assert_close(out.loss, want, rtol=1e-12, atol=1e-12)
        for g, w in zip(torch.autograd.grad(out.loss, (q, p, neg)), torch.autograd.grad(want, (q, p, neg))):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
        assert out.neg_scores.shape == (4, 2)
        assert {"info_nce", "accuracy"} <= set(out.metrics)


def test_without_negatives():
    q, p, neg = data(1)
    loss = REGISTRIES["contrastive_losses"].build("cbb")
    out = loss(q, p)
    torch.testing.assert_close(out.loss, ref.info_nce(q, p), rtol=1e-12, atol=1e-12)
    assert out.neg_scores is None


def test_defaults_capability_and_errors():
    spec = REGISTRIES["contrastive_losses"].default_spec("cbb")
    assert spec == {"type": "cbb", "temperature": 0.05, "mask_duplicates": True}
    loss = REGISTRIES["contrastive_losses"].build("cbb")
    assert loss.shared_queries  # the supervised stage reads the same pairs on every rank for it
    wrapped = REGISTRIES["contrastive_losses"].build({"type": "matryoshka", "loss": "cbb", "dims": [4]})
    assert wrapped.shared_queries
    q, p, neg = data(0)
    with pytest.raises(LossInputError, match="negatives"):
        loss(q, p, neg[:2])
