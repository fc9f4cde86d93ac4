"""causal_lm: chunked CE vs plain full-logits F.cross_entropy in float64 (value and gradients)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conan_core.losses.base import LossInputError
from conan_core.registries import REGISTRIES


def build(**fields):
    return REGISTRIES["lm_losses"].build({"type": "causal_lm", **fields})


def full_ce(hidden, weight, labels):
    """The plain definition: full logits, shift by one, mean over labels != -100."""
    logits = hidden[:, :-1] @ weight.T
    return F.cross_entropy(logits.reshape(-1, weight.shape[0]), labels[:, 1:].reshape(-1), ignore_index=-100)


def data(seed, b=3, length=9, h=5, vocab=13, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, length, h, generator=g, dtype=dtype, requires_grad=True)
    weight = torch.randn(vocab, h, generator=g, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, vocab, (b, length), generator=g)
    labels[0, :4] = -100  # an SFT prompt
    labels[-1, 6:] = -100  # padding
    return hidden, weight, labels


@pytest.mark.parametrize("chunk", [1, 3, 7, 4096])
def test_value_and_gradients_match_full_cross_entropy(chunk):
    for seed in range(3):
        hidden, weight, labels = data(seed)
        out = build(chunk_size=chunk)(hidden, weight, labels)
        want = full_ce(hidden, weight, labels)
        torch.testing.assert_close(out.loss, want, rtol=1e-12, atol=1e-12)
        got_g = torch.autograd.grad(out.loss * 1.7, (hidden, weight))  # a non-unit upstream gradient
        want_g = torch.autograd.grad(want * 1.7, (hidden, weight))
        for g, w in zip(got_g, want_g):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
        assert out.metrics["tokens"] == int((labels[:, 1:] != -100).sum())


def test_only_one_argument_needs_grad():
    hidden, weight, labels = data(1)
    frozen = weight.detach()
    out = build(chunk_size=4)(hidden, frozen, labels)
    g, = torch.autograd.grad(out.loss, hidden)
    w, = torch.autograd.grad(full_ce(hidden, frozen, labels), hidden)
    torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        out = build(chunk_size=4)(hidden, weight, labels)
    assert not out.loss.requires_grad
    torch.testing.assert_close(out.loss, full_ce(hidden, weight, labels).detach(), rtol=1e-12, atol=1e-12)


def test_no_counted_token_gives_zero_and_zero_grads():
    hidden, weight, labels = data(2)
    out = build()(hidden, weight, torch.full_like(labels, -100))
    assert float(out.loss.detach()) == 0.0
    out.loss.backward()
    assert torch.equal(hidden.grad, torch.zeros_like(hidden)) and torch.equal(weight.grad, torch.zeros_like(weight))


def test_backward_keeps_no_chunk_logits():
    """Everything autograd saves is at most [T, H] or [V, H]: never a [chunk, V] logits block."""
    t_len, vocab, h, chunk = 41, 50, 4, 8
    hidden = torch.randn(1, t_len, h, requires_grad=True)
    weight = torch.randn(vocab, h, requires_grad=True)
    labels = torch.randint(0, vocab, (1, t_len))
    saved = []

    def pack(x):
        saved.append(x.numel())
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        out = build(chunk_size=chunk)(hidden, weight, labels)
    assert saved and max(saved) <= max(vocab * h, t_len * h) < chunk * vocab
    got = torch.autograd.grad(out.loss, (hidden, weight))
    want = torch.autograd.grad(full_ce(hidden, weight, labels), (hidden, weight))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_bf16_autocast_close_to_fp32():
    hidden, weight, labels = data(4, b=2, length=33, h=16, vocab=64, dtype=torch.float32)
    fp32 = build(chunk_size=10)(hidden, weight, labels)
    gh32, gw32 = torch.autograd.grad(fp32.loss, (hidden, weight))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = build(chunk_size=10)(hidden, weight, labels)
    assert low.loss.dtype == torch.float32
    gh, gw = torch.autograd.grad(low.loss, (hidden, weight))
    assert gh.dtype == torch.float32 and gw.dtype == torch.float32
    torch.testing.assert_close(low.loss, fp32.loss, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(gh, gh32, rtol=5e-2, atol=5e-3)
    torch.testing.assert_close(gw, gw32, rtol=5e-2, atol=5e-3)


def test_bad_inputs_name_the_argument():
    hidden, weight, labels = data(0)
    with pytest.raises(LossInputError, match="labels outside"):
        build()(hidden, weight, labels.clamp(max=13) + 1)
    with pytest.raises(LossInputError, match="weight"):
        build()(hidden, weight.T, labels)
    with pytest.raises(LossInputError, match="labels"):
        build()(hidden, weight, labels[:, 1:])
    assert REGISTRIES["lm_losses"].default_spec("causal_lm")["chunk_size"] == 4096
