"""build_pipeline(cfg): straight-line assembly of every component a run names.

Reads top to bottom: the backbone, then each stage's components in recipe order. Components that
need data (sources, the miner's candidate pool) or a trained model are built by the stage runner
at stage start from the same specs; everything else is built here, so a wrong key or field fails
before any data is read or any directory is created.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conan_core.config import RunConfig
from conan_core.registries import REGISTRIES


@dataclass
class StagePlan:
    """The components of one training stage, built from its config."""

    name: str
    config: Any
    optimizer: Any
    mask: Any
    loss: Any
    pooler: Any = None
    sts_loss: Any = None
    miner_spec: dict | None = None
    source_spec: dict | None = None


@dataclass
class Pipeline:
    config: RunConfig
    backbone: Any
    hidden_size: int
    stages: dict[str, StagePlan] = field(default_factory=dict)
    evaluators: list = field(default_factory=list)

    def describe(self) -> str:
        """One line per stage: the component keys it uses."""
        lines = [f"backbone: {self.config.model['type']} (hidden {self.hidden_size})"]
        for name, plan in self.stages.items():
            parts = [f"mask={type(plan.mask).__name__}", f"loss={type(plan.loss).__name__}"]
            if plan.pooler is not None:
                parts.append(f"pooler={type(plan.pooler).__name__}")
            if plan.sts_loss is not None:
                parts.append(f"sts_loss={type(plan.sts_loss).__name__}")
            if plan.miner_spec is not None:
                parts.append(f"miner={plan.miner_spec['type']}")
            lines.append(f"{name}: " + ", ".join(parts))
        if self.evaluators:
            lines.append("eval: " + ", ".join(type(e).__name__ for e in self.evaluators))
        return "\n".join(lines)


def build_pipeline(cfg: RunConfig) -> Pipeline:
    """Instantiate every component of ``cfg`` that needs neither data nor weights."""
    backbone = REGISTRIES["backbones"].build(cfg.model, "model")
    hidden = int(backbone.config.hidden_size)
    pipe = Pipeline(config=cfg, backbone=backbone, hidden_size=hidden)

    if cfg.pretrain.enabled:
        c = cfg.pretrain
        pipe.stages["pretrain"] = StagePlan(
            "pretrain", c,
            optimizer=REGISTRIES["optimizers"].build(c.optimizer, "pretrain.optimizer"),
            mask=REGISTRIES["masks"].build(c.mask, "pretrain.mask"),
            loss=REGISTRIES["losses"].build(c.loss, "pretrain.loss"),
            source_spec=c.source)

    if cfg.sft.enabled:
        c = cfg.sft
        pipe.stages["sft"] = StagePlan(
            "sft", c,
            optimizer=REGISTRIES["optimizers"].build(c.optimizer, "sft.optimizer"),
            mask=REGISTRIES["masks"].build(c.mask, "sft.mask"),
            loss=REGISTRIES["losses"].build(c.loss, "sft.loss"),
            source_spec=c.source)

    if cfg.weak.enabled:
        c = cfg.weak
        pipe.stages["weak"] = StagePlan(
            "weak", c,
            optimizer=REGISTRIES["optimizers"].build(c.optimizer, "weak.optimizer"),
            mask=REGISTRIES["masks"].build(c.mask, "weak.mask"),
            loss=REGISTRIES["losses"].build(c.loss, "weak.loss"),
            pooler=REGISTRIES["poolers"].build(c.pooler, "weak.pooler", hidden_size=hidden),
            source_spec=c.source)

    if cfg.supervised.enabled:
        c = cfg.supervised
        pipe.stages["supervised"] = StagePlan(
            "supervised", c,
            optimizer=REGISTRIES["optimizers"].build(c.optimizer, "supervised.optimizer"),
            mask=REGISTRIES["masks"].build(c.mask, "supervised.mask"),
            loss=REGISTRIES["losses"].build(c.loss, "supervised.loss"),
            pooler=REGISTRIES["poolers"].build(c.pooler, "supervised.pooler", hidden_size=hidden),
            sts_loss=(REGISTRIES["losses"].build(c.sts_loss, "supervised.sts_loss")
                      if c.sts_loss is not None else None),
            miner_spec=REGISTRIES["miners"].resolve(c.miner),
            source_spec=c.source)

    if cfg.eval.enabled:
        pipe.evaluators = [REGISTRIES["evaluators"].build(spec, f"eval.evaluators[{i}]")
                           for i, spec in enumerate(cfg.eval.evaluators)]
    return pipe
