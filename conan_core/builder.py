"""The one place a run's YAML becomes objects.

:func:`build_stage` builds one training stage's components (mask, loss, STS loss, pooler,
optimizer factory, miner plan) and :func:`build_pipeline` every stage's plus the backbone and the
evaluators. ``conan run`` checks a config with :func:`build_pipeline` before writing anything,
``--dry-run`` describes what it returns, and the stage runners (:mod:`conan_core.train.stages`)
train with exactly what :func:`build_stage` returns: a stage only wires the model and the data.
Components that need data (sources, the miner's candidate pool) are built by the stage from the
specs kept here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conan_core.config import STAGES, RunConfig
from conan_core.registries import REGISTRIES

#: the registry kind of each stage's ``loss`` slot (the slot's type in the config, too)
LOSS_KINDS = {"pretrain": "lm_losses", "sft": "lm_losses", "weak": "contrastive_losses",
              "supervised": "contrastive_losses"}


@dataclass
class MinerPlan:
    """The supervised stage's miner: its resolved spec and the stage values it is built with
    (``num_negatives``, ``seed`` and ``micro_batches`` — observations per optimizer step — are
    runtime arguments of every miner, never read from its config); the stage adds the candidate
    pool, the rank, whether the pool is a ranked search and the re-mining function."""

    spec: dict
    num_negatives: int
    seed: int
    micro_batches: int = 1

    def build(self, *, pool: Any, rank: int = 0, ranked_pool: bool = True, remine_fn: Any = None) -> Any:
        """The miner, seeded per rank (``seed + rank``) so ranks draw different negatives;
        ``remine_fn`` re-ranks candidates with the current model (miners that re-mine use it)."""
        return REGISTRIES["miners"].build(self.spec, "supervised.miner", pool=pool, num_negatives=self.num_negatives,
                                          seed=self.seed + rank, ranked_pool=ranked_pool,
                                          micro_batches=self.micro_batches, remine_fn=remine_fn)

    def describe(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in self.spec.items() if k != "type")
        return f"{self.spec['type']}(num_negatives={self.num_negatives}{', ' + fields if fields else ''})"


@dataclass
class TrackerPlan:
    """The run's trackers (``report_to``, resolved, ``jsonl`` always first): the trainer builds them
    on rank 0 once it knows the step it starts from (a runtime argument of every tracker)."""

    specs: list[dict]

    def build(self, *, log_dir: Any, run_dir: Any, run_name: str, stage: str, run_config: dict,
              start_step: int) -> list:
        return [REGISTRIES["trackers"].build(spec, f"report_to[{i}]", log_dir=log_dir, run_dir=run_dir,
                                             run_name=run_name, stage=stage, run_config=run_config,
                                             start_step=start_step)
                for i, spec in enumerate(self.specs)]


def build_tracker_plan(cfg: RunConfig) -> TrackerPlan:
    """``report_to`` resolved; ``metrics.jsonl`` is written whatever it lists (the report and resume
    read it), so ``jsonl`` is added first when absent and kept once."""
    specs = [REGISTRIES["trackers"].resolve(spec) for spec in cfg.report_to]
    jsonl = [s for s in specs if s["type"] == "jsonl"][:1] or [REGISTRIES["trackers"].resolve("jsonl")]
    return TrackerPlan(jsonl + [s for s in specs if s["type"] != "jsonl"])


def build_stage_evaluators(cfg: RunConfig, name: str) -> list:
    """The evaluators a stage runs every ``eval_every`` steps: ``eval.evaluators`` with the BM25
    reference off (it does not change while the model trains; the final evaluation has it) and
    ``eval.batch_size`` unless a spec sets its own. Empty when the stage does not evaluate."""
    if getattr(cfg, name).eval_every is None:
        return []
    out = []
    for i, spec in enumerate(cfg.eval.evaluators):
        spec = {"type": spec} if isinstance(spec, str) else dict(spec)
        spec.setdefault("batch_size", cfg.eval.batch_size)
        spec["bm25"] = False
        out.append(REGISTRIES["evaluators"].build(spec, f"eval.evaluators[{i}]"))
    return out


@dataclass
class StageComponents:
    """What one stage trains with (built by :func:`build_stage`).

    ``config`` is the stage's config section (the loop reads its steps, lr, accumulation ...);
    ``optimizer`` a factory (``optimizer.build(named_parameters, lr, weight_decay)``); ``pooler``,
    ``sts_loss`` and ``miner`` are None where the stage has none; ``trackers`` where the scalars go;
    ``evaluators`` what evaluation during training runs (empty without ``eval_every``).
    """

    name: str
    config: Any
    mask: Any
    loss: Any
    optimizer: Any
    pooler: Any = None
    sts_loss: Any = None
    miner: MinerPlan | None = None
    specs: dict[str, Any] = field(default_factory=dict)
    trackers: TrackerPlan | None = None
    evaluators: list = field(default_factory=list)

    def alpha(self, step: int) -> float:
        """The mask's alpha at optimizer step ``step`` (1-based) of this stage's schedule."""
        return self.mask.alpha(step, self.config.steps)

    def describe(self) -> str:
        """One line: every component with the fields that differ from its defaults."""
        parts = [f"{slot}={_describe(spec)}" for slot, spec in self.specs.items()]
        if self.miner is not None:
            parts.append(f"miner={self.miner.describe()}")
        c = self.config
        if self.sts_loss is not None:
            parts.append(f"sts_weight={c.sts_weight}")
        parts.append(f"steps={c.steps}, batch={c.batch_size}x{c.grad_accum}, lr={c.lr}")
        if self.evaluators:
            best = f", keep_best={c.keep_best.metric} ({c.keep_best.mode})" if c.keep_best is not None else ""
            parts.append(f"eval_every={c.eval_every}{best}")
        return f"{self.name}: " + ", ".join(parts)


def build_miner_plan(cfg: RunConfig) -> MinerPlan | None:
    """The supervised stage's miner plan (None when ``supervised.num_negatives`` is 0)."""
    c = cfg.supervised
    if c.num_negatives <= 0:
        return None
    return MinerPlan(REGISTRIES["miners"].resolve(c.miner), c.num_negatives, cfg.seed,
                     c.grad_accum)


def build_stage(cfg: RunConfig, name: str, hidden_size: int) -> StageComponents:
    """Every component of stage ``name`` of ``cfg`` (``hidden_size``: the model's width, for poolers).

    Built in a fixed order (pooler, mask, loss, STS loss, optimizer), so a trainable pooler's
    initialisation draws the same random numbers in every run.
    """
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; valid: {', '.join(STAGES)}")
    c = getattr(cfg, name)
    specs: dict[str, Any] = {}
    pooler = None
    if hasattr(c, "pooler"):
        pooler = REGISTRIES["poolers"].build(c.pooler, f"{name}.pooler", hidden_size=hidden_size)
        specs["pooler"] = REGISTRIES["poolers"].resolve(c.pooler)
    mask = REGISTRIES["masks"].build(c.mask, f"{name}.mask")
    specs["mask"] = REGISTRIES["masks"].resolve(c.mask)
    loss = REGISTRIES[LOSS_KINDS[name]].build(c.loss, f"{name}.loss")
    specs["loss"] = REGISTRIES[LOSS_KINDS[name]].resolve(c.loss)
    sts_loss = None
    miner = None
    if name == "supervised":
        if c.sts_loss is not None:
            sts_loss = REGISTRIES["pair_losses"].build(c.sts_loss, "supervised.sts_loss")
            specs["sts_loss"] = REGISTRIES["pair_losses"].resolve(c.sts_loss)
        miner = build_miner_plan(cfg)
    optimizer = REGISTRIES["optimizers"].build(c.optimizer, f"{name}.optimizer")
    specs["optimizer"] = REGISTRIES["optimizers"].resolve(c.optimizer)
    return StageComponents(name=name, config=c, mask=mask, loss=loss, optimizer=optimizer, pooler=pooler,
                           sts_loss=sts_loss, miner=miner, specs=specs, trackers=build_tracker_plan(cfg),
                           evaluators=build_stage_evaluators(cfg, name))


def build_backbone(cfg: RunConfig) -> Any:
    """The backbone factory of ``cfg.model`` (``backbone.build(vocab_size)`` makes the model)."""
    return REGISTRIES["backbones"].build(cfg.model, "model")


@dataclass
class Pipeline:
    """Every stage's components (:func:`build_stage`), the backbone and the evaluators of a run."""

    config: RunConfig
    backbone: Any
    hidden_size: int
    stages: dict[str, StageComponents] = field(default_factory=dict)
    evaluators: list = field(default_factory=list)

    def describe(self) -> str:
        """One line per stage: what it trains with (what the stage runners build, exactly)."""
        lines = [f"backbone: {self.config.model['type']} (hidden {self.hidden_size})",
                 "report_to: " + ", ".join(spec["type"] for spec in build_tracker_plan(self.config).specs)]
        lines += [stage.describe() for stage in self.stages.values()]
        if self.evaluators:
            lines.append("eval: " + ", ".join(type(e).__name__ for e in self.evaluators))
        return "\n".join(lines)


def build_pipeline(cfg: RunConfig) -> Pipeline:
    """The backbone factory, every enabled stage's components and the evaluators of ``cfg``."""
    backbone = build_backbone(cfg)
    hidden = int(backbone.config.hidden_size)
    pipe = Pipeline(config=cfg, backbone=backbone, hidden_size=hidden)
    for name in STAGES:
        if getattr(cfg, name).enabled:
            pipe.stages[name] = build_stage(cfg, name, hidden)
    if cfg.eval.enabled:
        pipe.evaluators = [REGISTRIES["evaluators"].build(spec, f"eval.evaluators[{i}]")
                           for i, spec in enumerate(cfg.eval.evaluators)]
    return pipe


def _describe(spec: dict) -> str:
    """``key`` or ``key(field=value, ...)`` with nested specs described the same way."""
    fields = []
    for k, v in spec.items():
        if k == "type":
            continue
        fields.append(f"{k}={_describe(v) if isinstance(v, dict) and 'type' in v else v}")
    return spec["type"] + (f"({', '.join(fields)})" if fields else "")
