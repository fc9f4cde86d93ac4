"""Conformance suite: every registered key (plugins included) must pass its kind's contract.

Use from a plugin's tests::

    from conan_core.testing import check_component
    check_component("mask_schedules", "example/exponential")

``check_component`` builds the key from its default Config (plus what the class's
``example_config(tmp_dir)`` hook provides for required fields, e.g. a source's data path) with the
runtime arguments the trainer passes (:func:`conformance_runtime`), then runs its kind's check,
which calls the component exactly as the trainer does. There is one check per kind and no check
looks at the key, so a plugin is held to the same contract as the built-in keys. The checks are
small and run on CPU with fresh random inputs.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from conan_core.registries import REGISTRIES
from conan_core.registry import ComponentConfig


def conformance_runtime(kind: str, tmp_dir=None) -> dict[str, Any]:
    """Runtime keyword arguments a component of ``kind`` is built with for the checks: exactly the
    ones the trainer passes (see each kind's base class)."""
    if kind == "poolers":
        return {"hidden_size": 16}
    if kind == "miners":
        from conan_core.miners.pool import Candidate

        pool = {f"q{i}": [Candidate(f"d{i}_{r}", f"candidate {i} {r}", 0.9 - 0.01 * r, r)
                          for r in range(40)] for i in range(4)}
        return {"pool": pool, "num_negatives": 3, "seed": 0, "ranked_pool": True}
    if kind == "sources":
        return {"rank": 0, "world_size": 1, "seed": 0}
    if kind == "trackers":
        import tempfile
        from pathlib import Path

        root = Path(tmp_dir) if tmp_dir is not None else Path(tempfile.mkdtemp(prefix="conan-tracker-"))
        return {"log_dir": root / "run" / "stage", "run_dir": root / "run", "run_name": "conformance",
                "stage": "stage", "run_config": {"seed": 0}, "start_step": 0}
    return {}


def example_fields(kind: str, key: str, tmp_dir) -> dict[str, Any]:
    """Config fields the key cannot default (paths to data): what its class's
    ``example_config(tmp_dir)`` hook returns after writing small real data into ``tmp_dir``."""
    cls = REGISTRIES[kind].get(key)
    required = [n for n, f in cls.Config.model_fields.items() if f.is_required()]
    if not required:
        return {}
    hook = getattr(cls, "example_config", None)
    if hook is None:
        raise AssertionError(f"{kind}/{key} has required config fields {required} and no example_config(tmp_dir) "
                             "classmethod to provide conformance data (see conan_core.sources.base.Source)")
    if tmp_dir is None:
        raise AssertionError(f"{kind}/{key} has required fields {required}: pass tmp_dir to check_component")
    from pathlib import Path

    out = Path(tmp_dir) / kind / key.replace("/", "_")
    out.mkdir(parents=True, exist_ok=True)
    fields = dict(hook(out))
    missing = [n for n in required if n not in fields]
    assert not missing, f"{kind}/{key}: example_config() left required fields {missing} unset"
    return fields


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


def _finite_scalar(out, kind, key):
    from conan_core.losses.base import LossOutput

    assert isinstance(out, LossOutput), f"{kind}/{key}: forward must return a LossOutput, got {type(out).__name__}"
    assert out.loss.ndim == 0 and math.isfinite(float(out.loss.detach())), f"{kind}/{key}: loss not a finite scalar"


def _check_lm_loss(comp, key):
    """As :class:`conan_core.train.objectives.CausalLMObjective` calls it."""
    torch.manual_seed(0)
    hidden = torch.randn(2, 6, 16, requires_grad=True)
    labels = torch.randint(0, 30, (2, 6))
    labels[0, :2] = -100  # a prompt that is not counted
    out = comp(hidden, torch.randn(30, 16), labels)
    _finite_scalar(out, "lm_losses", key)
    out.loss.backward()
    assert hidden.grad is not None and torch.isfinite(hidden.grad).all(), f"lm_losses/{key}: no finite gradient"


def _check_contrastive_loss(comp, key):
    """As :class:`conan_core.train.objectives.EmbeddingObjective` calls it, with and without hard
    negatives (the ``in_batch`` miner gives none)."""
    torch.manual_seed(0)
    b, n, h = 4, 3, 16
    for negatives in (torch.randn(b, n, h), None):
        q = torch.randn(b, h, requires_grad=True)
        ids = {"query_ids": torch.arange(b), "positive_ids": torch.arange(100, 100 + b),
               "negative_ids": torch.arange(200, 200 + b * n).view(b, n) if negatives is not None else None}
        out = comp(q, torch.randn(b, h), negatives, **ids)
        _finite_scalar(out, "contrastive_losses", key)
        if negatives is not None:
            assert out.neg_scores is not None and tuple(out.neg_scores.shape) == (b, n), \
                f"contrastive_losses/{key}: neg_scores must be [B, n] = [{b}, {n}] (the miner's input)"
            assert out.neg_scores.dtype == torch.float32 and not out.neg_scores.requires_grad
        out.loss.backward()
        assert q.grad is not None and torch.isfinite(q.grad).all(), f"contrastive_losses/{key}: no finite gradient"
    chunk = comp.grad_cache_chunk
    assert chunk is None or (isinstance(chunk, int) and chunk > 0), f"contrastive_losses/{key}: bad grad_cache_chunk"
    assert isinstance(comp.shared_queries, bool)


def _check_pair_loss(comp, key):
    """As :class:`conan_core.train.objectives.EmbeddingObjective` calls the STS loss."""
    torch.manual_seed(0)
    e1 = torch.randn(6, 16, requires_grad=True)
    out = comp(e1, torch.randn(6, 16), torch.rand(6))
    _finite_scalar(out, "pair_losses", key)
    out.loss.backward()
    assert e1.grad is not None and torch.isfinite(e1.grad).all(), f"pair_losses/{key}: no finite gradient"


def _check_miner(comp, key):
    """As :class:`conan_core.train.streams.SupervisedStream` calls it, step after step."""
    ids = ["q0", "q1"]
    negs = comp.negatives_for(ids)
    assert len(negs) == 2 and all(len(row) == comp.num_negatives for row in negs), \
        f"miners/{key}: negatives_for must give num_negatives ({comp.num_negatives}) per example"
    n = len(negs[0])
    replaced = comp.observe(ids, torch.full((2, n), 0.5))
    assert replaced.shape == (2, n) and replaced.dtype == torch.bool
    stats = comp.stats()
    assert isinstance(stats, dict)
    comp.reset_step_stats()
    state = comp.state_dict()
    import json

    json.dumps(state)  # JSON-serialisable: it lives in every checkpoint
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


def _check_tracker(comp, key):
    """As :class:`conan_core.train.metrics.MetricsLog` calls it: a few steps of scalars, then close.
    (W&B runs offline here unless ``WANDB_MODE`` says otherwise.)"""
    for step in (1, 2, 3):
        comp.log(step, {"loss": 1.0 / step, "lr": 1e-3, "skipped_steps": 0, "eval/out_of_domain/sts/spearman": 0.5})
    comp.log(4, {"loss": float("nan")})
    comp.close()


def _check_evaluator(comp, key):
    assert callable(getattr(comp, "evaluate", None))


CHECKS: dict[str, Callable[[Any, str], None]] = {
    "masks": _check_mask,
    "mask_schedules": _check_schedule,
    "attention": _check_attention,
    "norms": _check_norm,
    "backbones": _check_backbone,
    "poolers": _check_pooler,
    "lm_losses": _check_lm_loss,
    "contrastive_losses": _check_contrastive_loss,
    "pair_losses": _check_pair_loss,
    "miners": _check_miner,
    "sources": _check_source,
    "translators": _check_translator,
    "optimizers": _check_optimizer,
    "evaluators": _check_evaluator,
    "trackers": _check_tracker,
}


def check_component(kind: str, key: str, tmp_dir=None) -> Any:
    """Build ``kind/key`` from its default Config and run the kind's contract check."""
    reg = REGISTRIES[kind]
    cls = reg.get(key)
    assert issubclass(cls.Config, ComponentConfig)
    fields = example_fields(kind, key, tmp_dir)
    default = cls.Config(**fields)
    assert default.model_config.get("extra") == "forbid" and default.model_config.get("frozen")
    comp = reg.build({"type": key, **fields}, **conformance_runtime(kind, tmp_dir))
    assert isinstance(comp, reg.base)
    CHECKS[kind](comp, key)
    return comp
