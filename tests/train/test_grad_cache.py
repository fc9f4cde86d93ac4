"""GradCache (train/grad_cache.py, asked for by the ``cached`` loss): parameter gradients equal the
uncached ones, dropout replayed exactly; the ``cached`` loss itself is its wrapped loss."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from torch import nn

from conan_core.losses.base import LossInputError
from conan_core.registries import REGISTRIES
from conan_core.train.grad_cache import grad_cache_step


class Encoder(nn.Module):
    """A tiny encoder with dropout, taking a dict batch ({"x": [b, 6], "scale": float})."""

    def __init__(self, p_drop: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.Dropout(p_drop), nn.Linear(16, 8))

    def forward(self, inputs):
        return self.net(inputs["x"]) * inputs["scale"]


def batch(seed, b=5, n=2):
    g = torch.Generator().manual_seed(seed)
    make = lambda rows: {"x": torch.randn(rows, 6, generator=g, dtype=torch.float64), "scale": 1.5}  # noqa: E731
    return make(b), make(b), make(b * n)


def param_grads(model):
    return [p.grad.clone() for p in model.parameters()]


def uncached(model, inner, q_in, p_in, n_in, chunk, **ids):
    """Plain forward of every chunk with grad, in the same order as GradCache, then one backward."""
    def enc(inputs):
        rows = inputs["x"].shape[0]
        return torch.cat([model({"x": inputs["x"][s:s + chunk], "scale": inputs["scale"]})
                          for s in range(0, rows, chunk)])
    q, p = enc(q_in), enc(p_in)
    args = [q, p]
    if n_in is not None:
        args.append(enc(n_in).reshape(q.shape[0], -1, q.shape[1]))
    out = inner(*args, **ids)
    out.loss.backward()
    return out


@pytest.mark.parametrize("chunk", [2, 3, 100])
@pytest.mark.parametrize("with_negatives", [True, False])
def test_gradients_equal_uncached_with_dropout_replay(chunk, with_negatives):
    torch.manual_seed(0)
    model = Encoder(p_drop=0.3).double().train()
    q_in, p_in, n_in = batch(1)
    n_in = n_in if with_negatives else None
    ids = dict(positive_ids=torch.tensor([1, 2, 3, 1, 5]))
    loss = REGISTRIES["contrastive_losses"].build({"type": "cached", "mini_batch_size": chunk})
    assert loss.grad_cache_chunk == chunk

    torch.manual_seed(123)
    want = uncached(model, loss.inner, q_in, p_in, n_in, chunk, **ids)
    want_grads, want_rng = param_grads(model), torch.get_rng_state()
    model.zero_grad()

    torch.manual_seed(123)
    out = grad_cache_step(loss, model, q_in, p_in, n_in, chunk=loss.grad_cache_chunk, **ids)
    assert not out.loss.requires_grad
    torch.testing.assert_close(out.loss, want.loss.detach(), rtol=1e-12, atol=1e-12)
    for g, w in zip(param_grads(model), want_grads):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    assert torch.equal(torch.get_rng_state(), want_rng)  # the RNG ends where the plain forward leaves it
    if with_negatives:
        torch.testing.assert_close(out.neg_scores, want.neg_scores)


def test_equals_plain_full_batch_without_dropout_and_scales():
    torch.manual_seed(0)
    model = Encoder(p_drop=0.0).double()
    q_in, p_in, n_in = batch(2, b=7, n=3)
    inner = REGISTRIES["contrastive_losses"].build({"type": "matryoshka", "dims": [4]})
    want = inner(model(q_in), model(p_in), model(n_in).reshape(7, 3, 8))
    want.loss.backward()
    want_grads = param_grads(model)
    model.zero_grad()

    loss = REGISTRIES["contrastive_losses"].build({"type": "cached", "mini_batch_size": 4,
                                       "loss": {"type": "matryoshka", "dims": [4]}})
    entered = []

    @contextmanager
    def no_sync():
        entered.append(1)
        yield

    out = grad_cache_step(loss, model, q_in, p_in, n_in, chunk=loss.grad_cache_chunk, backward_scale=0.25,
                          no_sync=no_sync)
    torch.testing.assert_close(out.loss, want.loss.detach(), rtol=1e-12, atol=1e-12)
    for g, w in zip(param_grads(model), want_grads):
        torch.testing.assert_close(g, 0.25 * w, rtol=1e-10, atol=1e-12)
    chunks = 2 + 2 + 6  # ceil(7/4) + ceil(7/4) + ceil(21/4)
    assert out.metrics["chunks"] == chunks and len(entered) == chunks - 1


def test_input_errors():
    model = Encoder(0.0).double()
    q_in, p_in, n_in = batch(0, b=4, n=2)
    loss = REGISTRIES["contrastive_losses"].build("cached")

    def step(*inputs):
        return grad_cache_step(loss, model, *inputs, chunk=2)
    with pytest.raises(LossInputError, match="multiple"):
        step(q_in, p_in, {"x": n_in["x"][:7], "scale": 1.0})
    with pytest.raises(LossInputError, match="must match"):
        step(q_in, {"x": p_in["x"][:3], "scale": 1.0})
    with pytest.raises(LossInputError, match="dict of tensors"):
        step([1, 2], p_in)


def test_cached_loss_is_its_wrapped_loss_and_passes_its_chunk_on():
    torch.manual_seed(0)
    q, p, n = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 2, 8)
    cached = REGISTRIES["contrastive_losses"].build({"type": "cached", "mini_batch_size": 3,
                                                     "loss": {"type": "info_nce", "temperature": 0.1}})
    plain = REGISTRIES["contrastive_losses"].build({"type": "info_nce", "temperature": 0.1})
    assert torch.equal(cached(q, p, n).loss, plain(q, p, n).loss)
    wrapped = REGISTRIES["contrastive_losses"].build({"type": "matryoshka", "dims": [4], "loss": {
        "type": "cached", "mini_batch_size": 3}})
    assert wrapped.grad_cache_chunk == 3 and plain.grad_cache_chunk is None
