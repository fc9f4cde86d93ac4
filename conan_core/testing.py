"""Conformance suite: every registered key (plugins included) must pass its kind's contract.

Use from a plugin's tests::

    from conan_core.testing import check_component
    check_component("mask_schedules", "example/exponential")

``check_component`` builds the key from its default Config with :func:`conformance_runtime` and runs
the check of its kind. The checks are small and run on CPU with fresh random inputs.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from conan_core.registries import REGISTRIES
from conan_core.registry import ComponentConfig


def conformance_runtime(kind: str, tmp_dir=None) -> dict[str, Any]:
    """Runtime keyword arguments a component of ``kind`` needs to be built for the checks."""
    if kind == "poolers":
        return {"hidden_size": 16}
    if kind == "miners":
        from conan_core.miners.pool import Candidate

        pool = {f"q{i}": [Candidate(f"d{i}_{r}", f"candidate {i} {r}", 0.9 - 0.01 * r, r)
                          for r in range(40)] for i in range(4)}
        return {"pool": pool}
    if kind == "sources":
        return {"rank": 0, "world_size": 1, "seed": 0}
    return {}


def _fields_needing_values(kind: str, key: str, tmp_dir) -> dict[str, Any]:
    """Config fields with no usable default (paths to data), filled with small real data."""
    conf = REGISTRIES[kind].config_class(key)
    required = [n for n, f in conf.model_fields.items() if f.is_required()]
    if not required:
        return {}
    if tmp_dir is None:
        raise AssertionError(f"{kind}/{key} has required fields {required}: pass tmp_dir to check_component")
    if kind == "sources":
        return {"path": str(_sample_data(key, tmp_dir))}
    if kind == "translators":
        import json
        from pathlib import Path

        path = Path(tmp_dir) / "parallel.jsonl"
        rows = [{"lang": "de", "text": "Datei öffnen", "en": "Open file"},
                {"lang": "fr", "text": "Ouvrir le fichier", "en": "Open file"}]
        path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
        return {"path": str(path)}
    raise AssertionError(f"{kind}/{key}: no conformance data for required fields {required}")


def _sample_data(key: str, tmp_dir):
    from pathlib import Path

    from conan_core.data.shards import write_shards

    out = Path(tmp_dir) / key
    if key == "jsonl":
        import json

        out.mkdir(parents=True, exist_ok=True)
        path = out / "data.jsonl"
        path.write_text("\n".join(json.dumps({"text": f"line {i} of the sample file"}) for i in range(12)) + "\n")
        return path
    if key == "text_shards":
        samples = [{"text": f"Sample text number {i}."} for i in range(12)]
        write_shards(samples, out, kind="text", shard_size=5)
    elif key == "pair_shards":
        samples = [{"query": f"query {i}", "pos": f"passage {i}", "neg": [f"other {i}"], "task": "retrieval",
                    "lang": "en"} for i in range(12)]
        write_shards(samples, out, kind="pairs", shard_size=5)
    elif key == "sts_shards":
        samples = [{"s1": f"first {i}", "s2": f"second {i}", "score": float(i % 5)} for i in range(12)]
        write_shards(samples, out, kind="sts", shard_size=5)
    else:
        raise AssertionError(f"sources/{key}: unknown source key, no conformance data")
    return out


# ----------------------------------------------------------------------------- kind checks

def _check_mask(comp, key):
    from conan_core.masks.base import MaskContext

    lengths = torch.tensor([5, 3])
    ctx = MaskContext(lengths=lengths, seq_len=5, alpha=0.5,
                      segment_ids=torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]]))
    m = comp.matrix(ctx)
    assert m.shape == (2, 5, 5), f"masks/{key}: matrix shape {tuple(m.shape)}"
    assert float(m.min()) >= 0.0 and float(m.max()) <= 1.0, f"masks/{key}: values outside [0, 1]"
    assert torch.all(m[1, :, 3:] == 0), f"masks/{key}: padding keys must be closed"
    diag = torch.diagonal(m[0])
    assert torch.all(diag == 1), f"masks/{key}: a token must always see itself"
    bias = comp.bias(ctx, torch.float32)
    assert bias.shape == (2, 1, 5, 5)


def _check_schedule(comp, key):
    total = 40
    values = [comp.alpha(t, total) for t in range(total + 1)]
    assert all(0.0 <= v <= 1.0 and math.isfinite(v) for v in values), f"mask_schedules/{key}: alpha outside [0, 1]"
    assert values == [comp.alpha(t, total) for t in range(total + 1)], f"mask_schedules/{key}: not a pure function"


def _check_attention(comp, key):
    from conan_core.masks.base import MaskContext

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 6, 8) for _ in range(3))
    kv = k[:, :2], v[:, :2]
    ctx = MaskContext(lengths=torch.tensor([6, 4]), seq_len=6, alpha=0.3)
    mask = REGISTRIES["masks"].build({"type": "soft"})
    ref = REGISTRIES["attention"].build({"type": "eager"})
    out = comp(q, *kv, mask=mask, ctx=ctx)
    expect = ref(q.double(), kv[0].double(), kv[1].double(), mask=mask, ctx=ctx)
    assert out.shape == q.shape
    real = torch.zeros(2, 1, 6, 1, dtype=torch.bool)
    real[0, :, :6], real[1, :, :4] = True, True
    err = ((out.double() - expect).abs() * real).max().item()
    assert err < 1e-4, f"attention/{key}: differs from the float64 eager reference by {err}"


def _check_norm(comp, key):
    norm = comp.make(16, 1e-6)
    x = torch.randn(3, 16)
    ref = x.double() * torch.rsqrt(x.double().pow(2).mean(-1, keepdim=True) + 1e-6)
    assert torch.allclose(norm(x).double(), ref, atol=1e-5), f"norms/{key}: differs from RMSNorm reference"


def _check_backbone(comp, key):
    model = comp.build(64)
    ids = torch.randint(0, 64, (2, 7))
    hidden = model.encode(ids, torch.ones_like(ids))
    assert hidden.shape[:2] == (2, 7) and torch.isfinite(hidden).all()


def _check_pooler(comp, key):
    hidden = torch.randn(3, 5, 16)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    out = comp(hidden, mask)
    assert out.shape == (3, 16) and torch.isfinite(out).all(), f"poolers/{key}: bad output"


def _check_loss(comp, key):
    torch.manual_seed(0)
    if key == "causal_lm":
        hidden = torch.randn(2, 6, 16, requires_grad=True)
        out = comp(hidden, torch.randn(30, 16), torch.randint(0, 30, (2, 6)))
    elif key == "cosent":
        e1, e2 = torch.randn(6, 16, requires_grad=True), torch.randn(6, 16)
        out = comp(e1, e2, torch.rand(6))
    elif key == "cached":
        lin = torch.nn.Linear(8, 16)

        def encode(batch):
            return lin(batch["x"])
        qx, px = {"x": torch.randn(4, 8)}, {"x": torch.randn(4, 8)}
        out = comp(encode, qx, px)
        assert lin.weight.grad is not None, "losses/cached must run its own backward"
        assert math.isfinite(float(out.loss.detach()))
        return
    else:
        q = torch.randn(4, 16, requires_grad=True)
        out = comp(q, torch.randn(4, 16), torch.randn(4, 3, 16))
    assert out.loss.ndim == 0 and math.isfinite(float(out.loss.detach())), f"losses/{key}: loss not a finite scalar"
    out.loss.backward()


def _check_miner(comp, key):
    ids = ["q0", "q1"]
    negs = comp.negatives_for(ids)
    assert len(negs) == 2
    n = len(negs[0])
    replaced = comp.observe(ids, torch.full((2, n), 0.5))
    assert replaced.shape == (2, n) and replaced.dtype == torch.bool
    state = comp.state_dict()
    comp.load_state_dict(state)


def _check_source(comp, key):
    samples = list(_take(comp, 5))
    assert samples, f"sources/{key}: yielded nothing"
    assert all("__key__" in s for s in samples)
    comp.load_state_dict(comp.state_dict())


def _take(iterable, n):
    for i, item in enumerate(iterable):
        if i >= n:
            return
        yield item


def _check_translator(comp, key):
    out = comp.translate(["Open file", "unknown words"], "en", "de")
    assert len(out) == 2 and all(o is None or isinstance(o, str) for o in out)


def _check_optimizer(comp, key):
    lin = torch.nn.Linear(4, 4)
    opt = comp.build(list(lin.named_parameters()), 1e-3)
    lin(torch.randn(2, 4)).sum().backward()
    before = lin.weight.detach().clone()
    opt.step()
    assert not torch.equal(before, lin.weight), f"optimizers/{key}: step changed nothing"


def _check_evaluator(comp, key):
    assert callable(getattr(comp, "evaluate", None))


CHECKS: dict[str, Callable[[Any, str], None]] = {
    "masks": _check_mask,
    "mask_schedules": _check_schedule,
    "attention": _check_attention,
    "norms": _check_norm,
    "backbones": _check_backbone,
    "poolers": _check_pooler,
    "losses": _check_loss,
    "miners": _check_miner,
    "sources": _check_source,
    "translators": _check_translator,
    "optimizers": _check_optimizer,
    "evaluators": _check_evaluator,
}


def check_component(kind: str, key: str, tmp_dir=None) -> Any:
    """Build ``kind/key`` from its default Config and run the kind's contract check."""
    reg = REGISTRIES[kind]
    cls = reg.get(key)
    assert issubclass(cls.Config, ComponentConfig)
    fields = _fields_needing_values(kind, key, tmp_dir)
    default = cls.Config(**fields)
    assert default.model_config.get("extra") == "forbid" and default.model_config.get("frozen")
    comp = reg.build({"type": key, **fields}, **conformance_runtime(kind, tmp_dir))
    assert isinstance(comp, reg.base)
    CHECKS[kind](comp, key)
    return comp
