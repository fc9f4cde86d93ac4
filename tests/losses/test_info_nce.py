"""info_nce: formula vs a float64 loop, duplicate masking, low temperature, bf16 autocast."""

from __future__ import annotations

import math

from tests.losses import loss_oracle as ref
import pytest
import torch

from conan_core.errors import ConfigError
from conan_core.losses.base import LossInputError
from conan_core.registries import REGISTRIES


def build(**fields):
    return REGISTRIES["contrastive_losses"].build({"type": "info_nce", **fields})


def data(seed, b=4, n=3, h=6, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q, p = (torch.randn(b, h, generator=g, dtype=dtype).requires_grad_(True) for _ in range(2))
    neg = torch.randn(b, n, h, generator=g, dtype=dtype).requires_grad_(True)
    return q, p, neg


def grads(loss, *ts):
    return torch.autograd.grad(loss, ts)


@pytest.mark.parametrize("in_batch", [True, False])
@pytest.mark.parametrize("with_negatives", [True, False])
def test_value_and_gradients_match_float64_formula(in_batch, with_negatives):
    if not in_batch and not with_negatives:
        return
    for seed in range(3):
        q, p, neg = data(seed)
        negs = neg if with_negatives else None
        loss = build(in_batch_negatives=in_batch, temperature=0.07)
        out = loss(q, p, negs)
        want = ref.info_nce(q, p, negs, temperature=0.07, in_batch=in_batch)
        torch.testing.assert_close(out.loss, want, rtol=1e-12, atol=1e-12)
        ts = (q, p, neg) if with_negatives else (q, p)
        for g, w in zip(grads(out.loss, *ts), grads(want, *ts)):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("in_batch", [True, False])
def test_duplicates_masked_by_ids_match_the_formula(in_batch):
    q, p, neg = data(5)
    pos_ids = torch.tensor([10, 11, 10, 13])  # rows 0 and 2 share their positive text
    neg_ids = torch.tensor([[20, 11, 22], [11, 24, 25], [26, 27, 10], [13, 29, 30]])  # some equal a positive
    query_ids = torch.tensor([40, 41, 41, 43])  # rows 1 and 2 ask the same question
    kw = dict(positive_ids=pos_ids, negative_ids=neg_ids, query_ids=query_ids)
    out = build(in_batch_negatives=in_batch)(q, p, neg, **kw)
    want = ref.info_nce(q, p, neg, in_batch=in_batch, **kw)
    torch.testing.assert_close(out.loss, want, rtol=1e-12, atol=1e-12)
    for g, w in zip(grads(out.loss, q, p, neg), grads(want, q, p, neg)):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    assert out.metrics["masked"] > 0
    unmasked = build(in_batch_negatives=in_batch, mask_duplicates=False)(q, p, neg, **kw)
    assert unmasked.metrics["masked"] == 0
    assert not torch.allclose(unmasked.loss, out.loss)


def test_duplicate_column_equals_that_column_removed():
    """RELIABILITY #14: same passage as the positive of two anchors, and a mined copy of a positive."""
    torch.manual_seed(0)
    q, p, neg = (t.detach().float() for t in data(7, b=3, n=2))
    p[2] = p[0]  # anchors 0 and 2 share a positive passage
    neg[1, 0] = p[1]  # a mined "hard negative" identical to anchor 1's positive
    ids = dict(positive_ids=torch.tensor([1, 2, 1]), negative_ids=torch.tensor([[5, 6], [2, 7], [8, 9]]))
    loss = build()(q, p, neg, **ids).loss
    # the same loss with the duplicate columns removed by hand, one anchor at a time
    t = 0.05
    cands = torch.cat([p, neg.reshape(-1, p.shape[1])])
    cands = torch.nn.functional.normalize(cands, dim=-1)
    qn = torch.nn.functional.normalize(q, dim=-1)
    drop = {0: [2], 1: [3 + 2], 2: [0]}  # column of the duplicate text for each anchor
    per_row = []
    for i in range(3):
        keep = [c for c in range(cands.shape[0]) if c not in drop[i]]
        logits = qn[i] @ cands[keep].T / t
        per_row.append(torch.logsumexp(logits, 0) - qn[i] @ cands[i] / t)
    torch.testing.assert_close(loss, torch.stack(per_row).mean())


def test_gradient_does_not_push_identical_texts_apart():
    q, p, neg = data(3, b=2, n=2)
    with torch.no_grad():
        neg[0, 1] = p[0]
    out = build(in_batch_negatives=False)(q, p, neg, positive_ids=torch.tensor([1, 2]),
                                          negative_ids=torch.tensor([[3, 1], [4, 5]]))
    g_neg, = grads(out.loss, neg)
    assert torch.equal(g_neg[0, 1], torch.zeros_like(g_neg[0, 1]))
    assert g_neg[0, 0].abs().sum() > 0


def test_low_temperature_cos_one_everywhere_is_finite():
    """RELIABILITY #16: a naive exp(cos / 0.01) overflows nothing here, but exp(100) in bf16 would."""
    b, n, h = 4, 3, 8
    v = torch.randn(h)
    q = v.expand(b, h).clone().requires_grad_(True)
    p = v.expand(b, h).clone().requires_grad_(True)
    neg = v.expand(b, n, h).clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = build(temperature=0.01)(q.bfloat16(), p.bfloat16(), neg.bfloat16())
    assert torch.isfinite(out.loss)
    uniform = torch.tensor(math.log(b + b * n), dtype=torch.float64)  # every candidate equally likely
    torch.testing.assert_close(out.loss.double(), uniform, rtol=1e-3, atol=1e-3)
    out.loss.backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, p, neg))


def test_bf16_autocast_logits_are_float32_and_loss_close_to_fp32():
    q, p, neg = (t.detach().float() for t in data(11, b=8, n=2, h=32))
    loss = build()
    seen = []
    loss.logits_hook.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    fp32 = loss(q, p, neg).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        same = loss(q, p, neg).loss  # fixed fp32 embeddings: autocast must not lower the loss's precision
        low = loss(q.bfloat16(), p.bfloat16(), neg.bfloat16()).loss
    assert seen == [torch.float32] * 3
    assert same.dtype == low.dtype == torch.float32
    torch.testing.assert_close(same, fp32, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(low, fp32, rtol=1e-2, atol=1e-2)


def test_neg_scores_are_detached_float32_cosines_of_own_negatives():
    q, p, neg = data(2)
    for in_batch in (True, False):
        out = build(in_batch_negatives=in_batch)(q, p, neg)
        assert out.neg_scores.dtype == torch.float32 and not out.neg_scores.requires_grad
        want = torch.tensor([[float(ref.cos(q[i], neg[i, k]).detach()) for k in range(3)] for i in range(4)])
        torch.testing.assert_close(out.neg_scores, want)
    assert build()(q, p).neg_scores is None
    assert set(build()(q, p, neg).metrics) == {"accuracy", "masked", "pos_cos", "neg_cos"}


def test_errors_name_the_argument():
    q, p, neg = data(0)
    with pytest.raises(LossInputError, match="in_batch_negatives=False needs hard negatives"):
        build(in_batch_negatives=False)(q, p)
    with pytest.raises(LossInputError, match="positive"):
        build()(q, p[:2])
    with pytest.raises(LossInputError, match="negative_ids"):
        build()(q, p, neg, negative_ids=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ConfigError, match="greater_than"):
        build(temperature=0)
    with pytest.raises(ConfigError, match="temprature"):
        build(temprature=0.1)


def test_empty_text_through_pooler_gives_finite_loss_and_grads():
    """RELIABILITY #12: an empty text pools to a zero embedding; the loss and gradients stay finite."""
    torch.manual_seed(4)
    hidden = torch.randn(6, 5, 8, requires_grad=True)  # rows 0-2 queries, 3-5 positives
    lengths = torch.tensor([5, 0, 3, 4, 2, 0])  # query 1 and positive 5 are empty texts
    am = (torch.arange(5)[None] < lengths[:, None]).long()
    emb = REGISTRIES["poolers"].build("mean")(hidden, am)
    out = build(temperature=0.01)(emb[:3], emb[3:])
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert torch.isfinite(hidden.grad).all()
    assert torch.equal(hidden.grad[1], torch.zeros(5, 8))
