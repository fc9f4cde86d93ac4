"""latent_attention against a plain float64 loop over rows, heads and tokens."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conan_core.poolers.base import PoolerInputError
from conan_core.registries import REGISTRIES


def build(**fields):
    spec = {"type": "latent_attention", "num_latents": 5, "num_heads": 2, "mlp_ratio": 2, **fields}
    return REGISTRIES["poolers"].build(spec, hidden_size=8)


def reference(p, hidden, attention_mask):
    """NV-Embed-style latent attention written out token by token, then the masked mean."""
    b, length, h = hidden.shape
    heads = p.config.num_heads
    hd = h // heads
    z = p.latents.double()
    k = z @ p.to_k.weight.double().T
    v = z @ p.to_v.weight.double().T
    out = torch.zeros(b, h, dtype=torch.float64)
    for i in range(b):
        rows = []
        for t in range(length):
            x = hidden[i, t].double()
            xn = F.layer_norm(x, (h,), p.norm.weight.double(), p.norm.bias.double(), p.norm.eps)
            q = p.to_q.weight.double() @ xn
            mixed = torch.zeros(h, dtype=torch.float64)
            for head in range(heads):
                sl = slice(head * hd, (head + 1) * hd)
                scores = torch.stack([q[sl] @ k[j, sl] for j in range(z.shape[0])]) / math.sqrt(hd)
                weights = torch.softmax(scores, 0)
                mixed[sl] = sum(weights[j] * v[j, sl] for j in range(z.shape[0]))
            a = x + p.to_out.weight.double() @ mixed + p.to_out.bias.double()
            an = F.layer_norm(a, (h,), p.mlp_norm.weight.double(), p.mlp_norm.bias.double(), p.mlp_norm.eps)
            hid = F.gelu(p.mlp[0].weight.double() @ an + p.mlp[0].bias.double())
            rows.append(a + p.mlp[2].weight.double() @ hid + p.mlp[2].bias.double())
        kept = [rows[t] for t in range(length) if attention_mask[i, t]]
        if kept:
            out[i] = sum(kept) / len(kept)
    return out


def test_matches_float64_loop():
    torch.manual_seed(0)
    p = build().double()
    with torch.no_grad():
        p.latents.normal_()  # far from uniform attention, so the softmax matters
    for seed in range(2):
        g = torch.Generator().manual_seed(seed)
        hidden = torch.randn(3, 4, 8, generator=g, dtype=torch.float64)
        am = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]])
        got = p(hidden, am)
        torch.testing.assert_close(got, reference(p, hidden, am), rtol=1e-10, atol=1e-10)


def test_trainable_and_autocast_output_float32():
    torch.manual_seed(1)
    p = build(normalize=True)
    hidden = torch.randn(2, 3, 8)
    am = torch.ones(2, 3, dtype=torch.long)
    full = p(hidden, am)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = p(hidden.to(torch.bfloat16), am)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, full, rtol=3e-2, atol=3e-2)
    full.sum().backward()
    assert p.latents.grad is not None and torch.isfinite(p.latents.grad).all()
    assert p.latents.grad.abs().sum() > 0


def test_runtime_errors_are_explicit():
    with pytest.raises(PoolerInputError, match="hidden_size"):
        REGISTRIES["poolers"].build("latent_attention")
    with pytest.raises(PoolerInputError, match="divisible"):
        REGISTRIES["poolers"].build({"type": "latent_attention", "num_heads": 3}, hidden_size=8)
    with pytest.raises(PoolerInputError, match="built for hidden_size 8"):
        build()(torch.zeros(1, 2, 4), torch.ones(1, 2))


def test_default_shape_of_the_paper_setting():
    p = REGISTRIES["poolers"].build("latent_attention", hidden_size=32)
    assert tuple(p.latents.shape) == (512, 32)
    assert p(torch.randn(2, 3, 32), torch.ones(2, 3)).shape == (2, 32)
