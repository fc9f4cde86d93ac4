"""mean / last_token / first_token / weighted_mean against plain float64 loops."""

from __future__ import annotations

import pytest
import torch

from conan_core.poolers.base import PoolerInputError
from conan_core.registries import REGISTRIES

SIMPLE = ["mean", "last_token", "first_token", "weighted_mean"]


def reference(key: str, hidden, attention_mask, pool_mask, exclude: bool, normalize: bool):
    """The pooler's definition, one row and one token at a time, in float64."""
    b, length, h = hidden.shape
    out = torch.zeros(b, h, dtype=torch.float64)
    for i in range(b):
        tokens = [t for t in range(length)
                  if attention_mask[i, t] and (not exclude or pool_mask[i, t])]
        if not tokens:
            continue
        if key == "mean":
            for t in tokens:
                out[i] += hidden[i, t].double()
            out[i] /= len(tokens)
        elif key == "last_token":
            out[i] = hidden[i, tokens[-1]].double()
        elif key == "first_token":
            out[i] = hidden[i, tokens[0]].double()
        else:  # weighted_mean: k-th pooled token has weight k
            norm = sum(range(1, len(tokens) + 1))
            for k, t in enumerate(tokens, start=1):
                out[i] += hidden[i, t].double() * k / norm
        if normalize:
            out[i] /= out[i].norm()
    return out


def batch(seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(5, 7, 6, generator=g, dtype=torch.float64).to(dtype)
    lengths = torch.tensor([7, 4, 1, 0, 3])
    attention_mask = (torch.arange(7)[None] < lengths[:, None]).long()
    pool_mask = torch.ones(5, 7, dtype=torch.long)
    pool_mask[0, :3] = 0  # instruction of 3 tokens
    pool_mask[1, :2] = 0
    pool_mask[4, :3] = 0  # the whole text is instruction: nothing left to pool
    return hidden, attention_mask, pool_mask


@pytest.mark.parametrize("key", SIMPLE)
@pytest.mark.parametrize("exclude", [False, True])
@pytest.mark.parametrize("normalize", [False, True])
def test_matches_float64_loop(key, exclude, normalize):
    for seed in range(3):
        hidden, am, pm = batch(seed)
        pooler = REGISTRIES["poolers"].build({"type": key, "exclude_instruction": exclude, "normalize": normalize})
        got = pooler(hidden, am, pm)
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, reference(key, hidden, am, pm, exclude, normalize), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("key", SIMPLE)
def test_exclude_instruction_is_a_real_switch(key):
    hidden, am, pm = batch(0)
    off = REGISTRIES["poolers"].build({"type": key})
    on = REGISTRIES["poolers"].build({"type": key, "exclude_instruction": True})
    # off: the pool_mask is ignored; on: it changes rows whose instruction would be pooled
    torch.testing.assert_close(off(hidden, am, pm), off(hidden, am))
    assert not torch.allclose(on(hidden, am, pm)[4], off(hidden, am, pm)[4])
    assert torch.equal(on(hidden, am, pm)[4], torch.zeros(6, dtype=torch.float64))
    with pytest.raises(PoolerInputError, match="pool_mask"):
        on(hidden, am)


@pytest.mark.parametrize("key", SIMPLE + ["latent_attention"])
def test_empty_rows_are_finite_zeros(key):
    spec = {"type": key, "normalize": True}
    if key == "latent_attention":
        spec.update(num_latents=4, num_heads=2)
    pooler = REGISTRIES["poolers"].build(spec, hidden_size=6)
    hidden, am, _ = batch(1, torch.float32)
    hidden = hidden.clone().requires_grad_(True)
    # an all-padding row may carry NaN hidden states (attention with every key closed)
    poisoned = hidden.detach().clone()
    poisoned[3] = float("nan")
    out = pooler(poisoned, am)
    assert torch.isfinite(out).all()
    assert torch.equal(out[3], torch.zeros(6))
    out = pooler(hidden, am)
    out.sum().backward()
    assert torch.isfinite(hidden.grad).all()
    assert torch.equal(hidden.grad[3], torch.zeros(7, 6))
    empty = pooler(torch.zeros(2, 0, 6), torch.zeros(2, 0, dtype=torch.long))
    assert torch.equal(empty, torch.zeros(2, 6))


def test_last_token_handles_left_padding():
    hidden, _, _ = batch(2)
    am = torch.tensor([[0, 0, 1, 1, 1, 0, 0]] * 5)
    got = REGISTRIES["poolers"].build("last_token")(hidden, am)
    torch.testing.assert_close(got, hidden[:, 4])
    got = REGISTRIES["poolers"].build("first_token")(hidden, am)
    torch.testing.assert_close(got, hidden[:, 2])


@pytest.mark.parametrize("key", SIMPLE)
def test_bf16_hidden_gives_float32_close_to_float64(key):
    hidden, am, pm = batch(3)
    pooler = REGISTRIES["poolers"].build(key)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = pooler(hidden.to(torch.bfloat16), am)
    assert got.dtype == torch.float32
    want = reference(key, hidden.to(torch.bfloat16), am, pm, False, False)
    torch.testing.assert_close(got.double(), want, rtol=1e-2, atol=1e-2)


def test_bad_shapes_name_the_argument():
    pooler = REGISTRIES["poolers"].build("mean")
    with pytest.raises(PoolerInputError, match="attention_mask"):
        pooler(torch.zeros(2, 3, 4), torch.ones(2, 4))
    with pytest.raises(PoolerInputError, match="hidden"):
        pooler(torch.zeros(2, 3), torch.ones(2, 3))


def test_defaults_and_registry():
    for key in REGISTRIES["poolers"].keys():
        spec = REGISTRIES["poolers"].default_spec(key)
        assert spec["normalize"] is False and spec["exclude_instruction"] is False
    assert REGISTRIES["poolers"].default_spec("latent_attention")["num_latents"] == 512
    assert REGISTRIES["poolers"].default_spec("latent_attention")["num_heads"] == 8
