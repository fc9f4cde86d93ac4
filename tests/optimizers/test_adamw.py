"""``adamw``: decay / no-decay groups and the fused switch, checked against a float64 reference."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conan_core.errors import ConfigError
from conan_core.optimizers.base import param_category, split_decay_groups
from conan_core.registries import REGISTRIES


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed_tokens = nn.Embedding(11, 6)
        self.proj = nn.Linear(6, 6)
        self.norm = nn.LayerNorm(6)
        self.head = nn.Linear(6, 3, bias=False)
        self.frozen = nn.Linear(6, 6)
        self.frozen.requires_grad_(False)
        self.temperature = nn.Parameter(torch.tensor(0.05))


def test_categories():
    net = Net()
    cats = {n: param_category(n, p) for n, p in net.named_parameters()}
    assert cats == {"embed_tokens.weight": "embedding", "proj.weight": "weight", "proj.bias": "bias",
                    "norm.weight": "norm", "norm.bias": "bias", "head.weight": "weight",
                    "frozen.weight": "weight", "frozen.bias": "bias", "temperature": "norm"}
    # DDP's "module." prefix does not change anything
    assert param_category("module.model.embed_tokens.weight", net.embed_tokens.weight) == "embedding"


def test_default_groups_and_tied_weights():
    net = Net()
    net.head.weight = net.embed_tokens.weight  # tied: must appear once
    opt = REGISTRIES["optimizers"].build({"type": "adamw"}).build(net.named_parameters(), 1e-3, 0.1)
    groups = {g["group"]: g for g in opt.param_groups}
    assert groups["decay"]["names"] == ["proj.weight"] and groups["decay"]["weight_decay"] == 0.1
    assert groups["no_decay"]["names"] == ["temperature", "embed_tokens.weight", "proj.bias", "norm.weight",
                                           "norm.bias"]
    assert groups["no_decay"]["weight_decay"] == 0.0
    n_opt = sum(len(g["params"]) for g in opt.param_groups)
    assert n_opt == len({id(p) for p in net.parameters() if p.requires_grad})


def test_configurable_no_decay_and_errors():
    net = Net()
    opt = REGISTRIES["optimizers"].build({"type": "adamw", "no_decay": ["bias"]}).build(
        net.named_parameters(), 1e-3, 0.1)
    groups = {g["group"]: g["names"] for g in opt.param_groups}
    assert "embed_tokens.weight" in groups["decay"] and "norm.weight" in groups["decay"]
    with pytest.raises(ConfigError):
        REGISTRIES["optimizers"].build({"type": "adamw", "no_decay": ["biases"]})
    with pytest.raises(ConfigError):
        REGISTRIES["optimizers"].build({"type": "adamw", "betas": [0.9, 1.5]})
    with pytest.raises(ValueError, match="no trainable parameters"):
        REGISTRIES["optimizers"].build({"type": "adamw"}).build(net.frozen.named_parameters(), 1e-3)
    with pytest.raises(ValueError, match="unknown"):
        split_decay_groups(net.named_parameters(), ["nope"], 0.1)


def _reference_adamw(params64, grads64, lr, betas, eps, wd_of, steps):
    """Plain float64 AdamW (decoupled decay) over several steps."""
    m = [torch.zeros_like(p) for p in params64]
    v = [torch.zeros_like(p) for p in params64]
    b1, b2 = betas
    for t in range(1, steps + 1):
        for i, (p, g) in enumerate(zip(params64, grads64[t - 1])):
            p.mul_(1 - lr * wd_of[i])
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            mhat, vhat = m[i] / (1 - b1 ** t), v[i] / (1 - b2 ** t)
            p.sub_(lr * mhat / (vhat.sqrt() + eps))
    return params64


@pytest.mark.parametrize("fused", ["auto", True, False])
def test_matches_float64_reference(fused):
    torch.manual_seed(0)
    net = Net()
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    factory = REGISTRIES["optimizers"].build({"type": "adamw", "fused": fused, "betas": [0.9, 0.95]})
    opt = factory.build(named, 1e-2, 0.1)
    assert bool(opt.defaults.get("fused")) == (fused in ("auto", True))  # CPU has a fused kernel
    decay_ids = {id(p) for g in opt.param_groups if g["group"] == "decay" for p in g["params"]}
    ref = [p.detach().double().clone() for _, p in named]
    grads = [[torch.randn_like(p, dtype=torch.float64) for _, p in named] for _ in range(3)]
    for step_grads in grads:
        for (_, p), g in zip(named, step_grads):
            p.grad = g.float()
        opt.step()
    wd = [0.1 if id(p) in decay_ids else 0.0 for _, p in named]
    ref = _reference_adamw(ref, grads, 1e-2, (0.9, 0.95), 1e-8, wd, 3)
    for (name, p), r in zip(named, ref):
        torch.testing.assert_close(p.detach().double(), r, rtol=1e-5, atol=1e-6, msg=name)
