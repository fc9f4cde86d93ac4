"""RunConfig: one YAML file describes a whole run (RECIPE.md §2 stages, DESIGN.md data flow).

Validation has two phases and collects **every** error before reporting:

1. structure — the sections and plain fields below (pydantic, ``extra="forbid"``);
2. components — every slot declared with :func:`component_field` is validated by its registry
   (unknown keys with close matches, bad fields with their dotted path, nested specs recursively).

``load_config(name_or_path, overrides)`` accepts a preset name (``tiny``) or a YAML path and
``--set a.b.c=value`` overrides; ``dump_config`` writes the fully resolved config (defaults filled).
"""

from __future__ import annotations

import json
import re
import weakref
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from conan_core.errors import ConanError, ConfigError, ConfigIssue, close_matches
from conan_core.registry import pydantic_issues
from conan_core.slots import component_field, field_at, map_slots, nested_kind, section_class, walk_slots

PRESET_PACKAGE = "conan_core.presets"
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class Section(BaseModel):
    """A config section: data only, unknown fields rejected."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    demo: bool = Field(True, description="build the bundled real demo corpus into <run>/data")
    demo_scale: float = Field(1.0, gt=0, description="multiplies the demo corpus size")
    dir: str | None = Field(None, description="data root with pretrain/ sft/ supervised/ sts/ eval/ (instead of the demo); "
                            "not needed when every enabled stage names its own source")
    max_chars: int = Field(20000, gt=0, description="texts longer than this are truncated (and counted)")
    on_bad_sample: Literal["skip", "raise"] = "skip"
    num_workers: int = Field(0, ge=0, description="DataLoader workers per rank")


class TokenizerConfig(Section):
    path: str | None = Field(None, description="an existing tokenizer directory (skips training)")
    vocab_size: int = Field(4000, gt=16)
    character_coverage: float = Field(0.9995, gt=0, le=1)
    max_sentences: int = Field(200_000, gt=0, description="sentences sampled from the corpus for training")


class KeepBestConfig(Section):
    """Keep the best model of a stage by an evaluation metric (needs ``eval_every``)."""

    metric: str = Field(..., description="the metric as logged without eval/: <task>/<metric> in domain, "
                        "out_of_domain/<task>/<metric> on the held-out sources (e.g. out_of_domain/retrieval/ndcg@10)")
    mode: Literal["max", "min"] = Field("max", description="max: higher is better; min: lower is better")
    final: Literal["best", "last"] = Field(
        "best", description="what <stage>/final holds when the stage ends (the next stage, export and Embedder read "
        "final/): best = the best evaluated model, last = the last step's model; best/ always holds the best")


class EarlyStoppingConfig(Section):
    """Stop a stage when ``keep_best.metric`` stops improving."""

    patience: int = Field(..., ge=1, description="evaluations in a row without improvement before the stage stops")
    min_delta: float = Field(0.0, ge=0, description="an evaluation improves only by more than this")


class StageConfig(Section):
    """Fields shared by the four training stages."""

    enabled: bool = True
    steps: int = Field(100, ge=0, description="optimizer steps of the stage (tau of the mask schedule)")
    batch_size: int = Field(8, gt=0, description="sequences (or queries) per micro-batch per rank")
    grad_accum: int = Field(1, gt=0)
    max_length: int = Field(256, gt=1, description="tokens per sequence")
    lr: float = Field(1e-4, gt=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    lr_decay: Literal["cosine", "linear", "constant"] = "cosine"
    weight_decay: float = Field(0.001, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    nan_policy: Literal["stop", "skip"] = Field("stop", description="non-finite loss: stop, or skip the step and count")
    checkpoint_every: int = Field(50, gt=0)
    keep_checkpoints: int = Field(2, gt=0)
    log_every: int = Field(10, gt=0, description="steps per throughput / miner-counter window (loss, its parts, "
                           "lr, alpha and grad norm are logged every step)")
    eval_every: int | None = Field(None, gt=0, description="run eval.evaluators on the held-out data every N steps "
                                   "and at the last step (BM25 off; in and out of domain); None = never")
    keep_best: KeepBestConfig | None = Field(None, description="keep the best model by an evaluation metric")
    early_stopping: EarlyStoppingConfig | None = Field(None, description="stop when keep_best.metric stops improving")
    optimizer: dict[str, Any] = component_field("optimizers", "adamw")
    source: dict[str, Any] | None = component_field("sources", None, description="defaults to the demo data of the stage")
    compile: bool = Field(False, description="compile each decoder block with torch.compile (conan backbone; "
                          "conan_core.model.compile.compile_blocks): same numbers to float32 rounding, faster steps "
                          "after a one-off compilation")
    compile_backend: Literal["inductor", "aot_eager"] = Field(
        "inductor", description="torch.compile backend of compile: true (aot_eager: no code generation, for checks)")
    mask: dict[str, Any] = component_field("masks", "causal")

    @field_validator("steps")
    @classmethod
    def _steps_of_enabled_stage(cls, value: int, info: ValidationInfo) -> int:
        # an enabled stage of 0 steps would divide by zero in its LR and mask schedules
        if value < 1 and info.data.get("enabled", True):
            raise ValueError("an enabled stage needs at least 1 step; set enabled: false to skip the stage")
        return value


class PretrainConfig(StageConfig):
    loss: dict[str, Any] = component_field("lm_losses", "causal_lm")
    packing: bool = Field(True, description="pack documents into full sequences (document mask keeps them apart)")
    mask: dict[str, Any] = component_field("masks", "document")


class SFTConfig(StageConfig):
    lr: float = Field(2e-5, gt=0)
    warmup_ratio: float = Field(0.02, ge=0, lt=1)
    loss: dict[str, Any] = component_field("lm_losses", "causal_lm")


class EmbeddingStageConfig(StageConfig):
    pooler: dict[str, Any] = component_field("poolers", "mean")
    query_instruction: str = Field("", description="text prepended to every query (with the <instruct> marker)")
    packing: bool = Field(False, description="encode a batch's queries, positives, negatives (and STS pairs) in one "
                          "packed forward: sequences end to end in rows, attention and positions kept per sequence "
                          "(conan_core.model.packing); the padded path's loss to float rounding, without its padding")
    pack_tokens: int | None = Field(None, gt=0, description="tokens per packed row (packing: true); None = the batch's "
                                    "longest sequence, so no row costs more attention than a padded one")


class WeakConfig(EmbeddingStageConfig):
    mask: dict[str, Any] = component_field("masks", {"type": "soft", "schedule": {"type": "linear"}})
    loss: dict[str, Any] = component_field("contrastive_losses", "info_nce")
    teacher_min_score: float | None = Field(
        0.4, description="drop pairs a teacher embedder scores below this (RECIPE §2.3); None keeps all")
    teacher: str | None = Field(
        None, description="teacher embedder scoring the pairs: a conan run / export / stage final dir, any "
        "directory sentence-transformers loads, or package:NAME[/SUBDIR] (a model installed inside a Python "
        "package); None = the model this stage starts from")


class MineConfig(Section):
    enabled: bool = True
    top_k: int = Field(40, gt=0, description="candidates mined per query (pool depth)")
    index: Literal["flat", "ivf", "hnsw"] = "flat"
    batch_size: int = Field(32, gt=0)


class SupervisedConfig(EmbeddingStageConfig):
    mask: dict[str, Any] = component_field("masks", "bidirectional")
    loss: dict[str, Any] = component_field(
        "contrastive_losses", {"type": "matryoshka", "loss": {"type": "info_nce"}})
    sts_loss: dict[str, Any] | None = component_field("pair_losses", "cosent")
    sts_source: dict[str, Any] | None = component_field(
        "sources", None, description="STS pairs (kind sts) for sts_loss; defaults to sts/ under the data root")
    sts_weight: float = Field(1.0, ge=0, description="weight of the STS loss added to the contrastive loss "
                              "(v1's batch-balance objective: 0.8)")
    miner: dict[str, Any] = component_field("miners", "dynamic_v2")
    num_negatives: int = Field(7, ge=0, description="hard negatives per query (RECIPE §2.4)")
    batch_size: int = Field(4, gt=0, description="queries per retrieval batch (RECIPE §2.4)")
    sts_batch_size: int = Field(32, gt=0)
    sts_every: int = Field(4, gt=0, description="one STS batch every N steps")
    lr: float = Field(1e-4, gt=0)
    tasks: list[str] = Field(default_factory=lambda: ["retrieval", "clr", "classification"])
    batching: Literal["by_task", "mixed"] = Field(
        "by_task", description="by_task: every batch holds one task (in-batch negatives stay within a task); "
        "mixed: consecutive samples of any task, v1's per-step task mixing")


class EvalConfig(Section):
    enabled: bool = True
    evaluators: list[dict[str, Any]] = Field(
        default_factory=lambda: [{"type": "retrieval"}, {"type": "cross_lingual"}, {"type": "sts"},
                                 {"type": "classification"}],
        json_schema_extra={"registry": "evaluators"})
    batch_size: int = Field(64, gt=0)
    data: str | None = Field(None, description="eval root (retrieval/, sts.jsonl ... and optionally out_of_domain/); "
                             "defaults to eval/ under the data root")


class ExportConfig(Section):
    enabled: bool = True
    max_length: int = Field(512, gt=1)


class RunConfig(Section):
    """A whole run: data → tokenizer → pretrain → sft → weak → mine → supervised → eval → export.

    A config made by :func:`load_config` remembers where it came from (:func:`config_origin`);
    that is not part of the config's data (two equal configs are equal wherever they came from).
    """

    name: str = "run"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto = bf16 autocast on CUDA, fp32 on CPU")
    parallel: Literal["auto", "none", "ddp", "fsdp"] = Field(
        "auto", description="under torchrun: auto = FSDP2 for >= 1e9 parameters on CUDA, else DDP")
    fsdp_mixed_precision: bool = Field(
        True, description="FSDP2 under bf16 precision: all-gather bf16 parameters and reduce gradients in "
        "fp32 (MixedPrecisionPolicy); false all-gathers the fp32 weights")
    report_to: list[dict[str, Any] | str] = Field(
        default_factory=lambda: [{"type": "jsonl"}],
        description="experiment trackers (keys of kind trackers): jsonl (metrics.jsonl, always written), "
        "tensorboard, wandb", json_schema_extra={"registry": "trackers"})
    data: DataConfig = Field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    model: dict[str, Any] = component_field("backbones", "conan")
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    sft: SFTConfig = Field(default_factory=SFTConfig)
    weak: WeakConfig = Field(default_factory=WeakConfig)
    mine: MineConfig = Field(default_factory=MineConfig)
    supervised: SupervisedConfig = Field(default_factory=SupervisedConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)



STAGES = ("pretrain", "sft", "weak", "supervised")


# ----------------------------------------------------------------------------- validation

def validate_dict(raw: Any, source: str | None = None) -> tuple[RunConfig | None, list[ConfigIssue]]:
    """Both validation phases; returns the config (None when invalid) and every issue found."""
    from conan_core.registries import REGISTRIES

    if not isinstance(raw, dict):
        return None, [ConfigIssue("", "a run config must be a mapping of sections", type(raw).__name__)]
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as exc:
        issues = pydantic_issues(exc, "", RunConfig)
        # phase 2 still runs on the component slots that are present, so a file shows all errors
        for slot in walk_slots(RunConfig, raw):
            issues.extend(REGISTRIES[slot.kind].validate(slot.value, slot.path)[1])
        return None, _dedupe(issues)
    issues = []
    for slot in walk_slots(RunConfig, cfg.model_dump()):
        issues.extend(REGISTRIES[slot.kind].validate(slot.value, slot.path)[1])
    issues.extend(data_issues(cfg))
    issues.extend(evaluation_issues(cfg))
    return (None if issues else cfg), issues


#: the sample kind each stage's source reads (for the hints of :func:`data_issues`)
STAGE_SAMPLE_KINDS = {"pretrain": "text", "sft": "pairs", "weak": "pairs", "supervised": "pairs"}


def evaluator_tasks(cfg: RunConfig) -> list[str]:
    """The task names evaluation gives results under: each evaluator's key, ``#2`` ... appended to
    a repeated key (:func:`conan_core.eval.report.evaluate_all`)."""
    names: list[str] = []
    for spec in cfg.eval.evaluators:
        key = spec if isinstance(spec, str) else str(spec.get("type"))
        name, n = key, 2
        while name in names:
            name, n = f"{key}#{n}", n + 1
        names.append(name)
    return names


def evaluation_issues(cfg: RunConfig) -> list[ConfigIssue]:
    """``keep_best`` needs ``eval_every`` and names a task of ``eval.evaluators``; ``early_stopping``
    needs ``keep_best`` (it watches that metric)."""
    issues = []
    tasks = evaluator_tasks(cfg)
    for stage in STAGES:
        c = getattr(cfg, stage)
        if c.keep_best is not None:
            if c.eval_every is None:
                issues.append(ConfigIssue(f"{stage}.keep_best", f"needs {stage}.eval_every (the best model is chosen "
                                          "among the evaluations); set it or remove keep_best"))
            metric = c.keep_best.metric
            local = metric[len("out_of_domain/"):] if metric.startswith("out_of_domain/") else metric
            task = next((t for t in sorted(tasks, key=len, reverse=True) if local.startswith(t + "/")), None)
            if task is None or local == task + "/":
                issues.append(ConfigIssue(f"{stage}.keep_best.metric", "expected [out_of_domain/]<task>/<metric> with "
                                          "<task> one of eval.evaluators", metric,
                                          valid=[f"{t}/..." for t in tasks]))
        if c.early_stopping is not None and c.keep_best is None:
            issues.append(ConfigIssue(f"{stage}.early_stopping", f"needs {stage}.keep_best (early stopping watches its "
                                      "metric); set keep_best.metric or remove early_stopping"))
    return issues


def data_issues(cfg: RunConfig) -> list[ConfigIssue]:
    """Every enabled stage must have data: its own ``<stage>.source``, or the data root (the demo
    corpus, or ``data.dir``). One issue per stage that has neither, naming the field to set."""
    if cfg.data.demo or cfg.data.dir is not None:
        return []
    issues = []
    for stage in STAGES:
        section = getattr(cfg, stage)
        if section.enabled and section.source is None:
            kind = STAGE_SAMPLE_KINDS[stage]
            issues.append(ConfigIssue(
                f"{stage}.source", "the stage has no data: data.demo is false and data.dir is unset; set "
                f"{stage}.source (e.g. {{type: jsonl, path: FILE.jsonl, kind: {kind}}} or {{type: hf_dataset, "
                f"path: DIR, kind: {kind}}}), set data.dir to a data root, or {stage}.enabled: false"))
    return issues


def _dedupe(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    seen, out = set(), []
    for issue in issues:
        key = (issue.path, issue.message)
        if key not in seen:
            seen.add(key)
            out.append(issue)
    return out


# ----------------------------------------------------------------------------- loading

def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(PRESET_PACKAGE).iterdir() if p.name.endswith(".yaml"))


def read_yaml(name_or_path: str | Path, _chain: tuple[str, ...] = ()) -> tuple[dict, str]:
    """Raw dict and a source label from a preset name or a YAML path (``extends:`` supported, and
    checked for cycles)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError([ConfigIssue("", "config file not found" if not path.exists() else
                                           "not a file", str(path))], str(path))
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError([ConfigIssue("", f"not UTF-8 text: byte {exc.object[exc.start:exc.start + 1]!r} at "
                                           f"offset {exc.start} cannot be decoded; save the file as UTF-8")],
                              source) from None
    else:
        names = preset_names()
        if str(name_or_path) not in names:
            raise ConfigError([ConfigIssue("", "neither a YAML file nor a preset", str(name_or_path),
                                           close_matches(str(name_or_path), names), names)])
        text = resources.files(PRESET_PACKAGE).joinpath(f"{name_or_path}.yaml").read_text(encoding="utf-8")
        source = f"preset {name_or_path}"
    identity = str(path.resolve()) if source == str(path) else source
    if identity in _chain:
        loop = " -> ".join([*_chain, identity])
        raise ConfigError([ConfigIssue("extends", f"extends itself in a cycle ({loop}); remove one of the "
                                                  "extends: lines")], source)
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue("", f"invalid YAML: {exc}")], source) from None
    if isinstance(raw, dict) and "extends" in raw:
        parent = raw.pop("extends")
        if not isinstance(parent, (str, Path)):
            raise ConfigError([ConfigIssue("extends", "expected a preset name or a YAML path", parent)], source)
        base, _ = read_yaml(parent, (*_chain, identity))
        raw = deep_merge(base, raw)
    return raw, source


def deep_merge(base: dict, update: dict) -> dict:
    """``update`` over ``base``; nested mappings merge, except component specs whose ``type`` changes."""
    out = dict(base)
    for key, value in update.items():
        old = out.get(key)
        if (isinstance(value, dict) and isinstance(old, dict)
                and not ("type" in value and value.get("type") != old.get("type"))):
            out[key] = deep_merge(old, value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` → (["a", "b", "c"], parsed value). Values are YAML scalars/lists/maps."""
    if "=" not in text:
        raise ConfigError([ConfigIssue("--set", "expected KEY.PATH=VALUE", text)])
    key, _, value = text.partition("=")
    parts = [p for p in key.strip().split(".")]
    if not key.strip() or any(not p for p in parts):
        raise ConfigError([ConfigIssue("--set", "empty key path", text)])
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    if isinstance(parsed, str) and _NUMBER.fullmatch(parsed.strip()):
        parsed = float(parsed)  # YAML 1.1 reads "1e-4" as text; a number is meant
    return parts, parsed


def apply_overrides(raw: dict, overrides: list[str] | None) -> dict:
    """Set each ``a.b.c=value`` in a copy of ``raw``. A section or component slot the path enters
    but ``raw`` leaves out starts from its default (``weak.mask.schedule.type=cosine`` on a file
    that never names ``weak.mask`` edits the default soft mask's schedule)."""
    raw = json.loads(json.dumps(raw))  # deep copy, plain types
    for text in overrides or []:
        parts, value = parse_override(text)
        node, schema = raw, RunConfig
        for depth, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            child_schema = _child_schema(schema, node, part)
            if nxt is None:
                nxt = node[part] = _default_of(schema, node, part)
            if not isinstance(nxt, dict):
                raise ConfigError([ConfigIssue(".".join(parts[:depth + 1]),
                                               f"cannot set a field inside {part!r}", nxt)])
            node, schema = nxt, child_schema
        node[parts[-1]] = value
    return raw


def _field_info(schema: Any, node: dict, name: str):
    """The pydantic FieldInfo of ``name`` under ``schema`` (a section class or a registry kind)."""
    if isinstance(schema, str):  # inside a component spec: its Config class owns the fields
        from conan_core.registries import REGISTRIES

        key = node.get("type")
        reg = REGISTRIES[schema]
        if not isinstance(key, str) or key not in reg.keys():
            return None
        try:
            return field_at(reg.config_class(key), name)
        except ConanError:
            return None
    return field_at(schema, name) if isinstance(schema, type) else None


def _child_schema(schema: Any, node: dict, name: str) -> Any:
    """What owns the fields one level down: a registry kind (a slot) or a section class."""
    info = _field_info(schema, node, name)
    if info is None:
        return None
    return nested_kind(info) or section_class(info)


def _default_of(schema: Any, node: dict, name: str) -> Any:
    info = _field_info(schema, node, name)
    if info is None or info.is_required():
        return {}
    default = info.get_default(call_default_factory=True)
    if isinstance(default, BaseModel):
        return {}  # a section: its own defaults fill in at validation
    return json.loads(json.dumps(default)) if isinstance(default, dict) else {}


def load_config(name_or_path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Load, override and validate; raises ConfigError listing every issue."""
    raw, source = read_yaml(name_or_path)
    raw = apply_overrides(raw, overrides)
    cfg, issues = validate_dict(raw, source)
    if issues:
        raise ConfigError(issues, source)
    _ORIGINS[id(cfg)] = {"config": source, "preset": base_preset(name_or_path), "overrides": list(overrides or [])}
    weakref.finalize(cfg, _ORIGINS.pop, id(cfg), None)
    return cfg


# where each live config of load_config came from, by id (kept outside the model, so equality and
# dumps see only the config's data; an entry goes when its config is garbage-collected)
_ORIGINS: dict[int, dict] = {}


def config_origin(cfg: RunConfig) -> dict | None:
    """Where :func:`load_config` read ``cfg`` from: ``{"config": "preset tiny" or the YAML path,
    "preset": the preset at the root of its extends: chain (None when there is none), "overrides":
    the --set texts}``; None for a config built otherwise."""
    origin = _ORIGINS.get(id(cfg))
    return dict(origin) if origin is not None else None


def base_preset(name_or_path: str | Path) -> str | None:
    """The preset a config starts from: itself for a preset name, else the root of the YAML's
    ``extends:`` chain (None when the chain ends in a YAML file without ``extends:``)."""
    seen: set[str] = set()
    current: Any = name_or_path
    while True:
        path = Path(current)
        if not (path.suffix in (".yaml", ".yml") or path.exists()):
            return str(current) if str(current) in preset_names() else None
        key = str(path.resolve())
        if key in seen or not path.is_file():
            return None
        seen.add(key)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return None
        if not isinstance(raw, dict) or not isinstance(raw.get("extends"), str):
            return None
        current = raw["extends"]


def resolve(cfg: RunConfig) -> dict:
    """The config as a plain dict with every default filled in, component specs included."""
    from conan_core.registries import REGISTRIES

    return map_slots(RunConfig, cfg.model_dump(), lambda kind, value: REGISTRIES[kind].resolve(value))


def dump_config(cfg: RunConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically); loading it back gives an equal config."""
    from conan_core.fsio import atomic_write_text

    return atomic_write_text(path, yaml.safe_dump(resolve(cfg), sort_keys=False, allow_unicode=True))
