"""What every stage shares: its context, the model it starts from, and the final save.

A stage module exposes ``wire(ctx, model, components) -> StageWiring``: it connects the model and
the data to the components :func:`conan_core.builder.build_stage` built (it builds no component
itself); :func:`conan_core.train.stages.run_stage` trains the wiring with the
:class:`~conan_core.train.loop.Trainer` and saves ``final/`` + ``DONE``.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from conan_core.config import STAGES
from conan_core.errors import ConanError
from conan_core.fsio import atomic_write_json, publish_dir, writing
from conan_core.train import distributed as D

log = logging.getLogger("conan_core.train")


@dataclass
class StageContext:
    """Everything a stage builder needs (runtime objects, never config fields)."""

    cfg: Any
    stage: str
    run_dir: Path
    env: D.DistEnv
    tokenizer: Any
    allow_data_change: bool = False
    progress: bool = True

    @property
    def stage_cfg(self) -> Any:
        return getattr(self.cfg, self.stage)

    @property
    def stage_dir(self) -> Path:
        return self.run_dir / self.stage

    def source_kwargs(self) -> dict:
        return {"rank": self.env.rank, "world_size": self.env.world_size, "seed": self.cfg.seed}

    def world(self, *parts: Any) -> dict:
        """The checkpoint's world: data fingerprint (sources, tokenizer, ``parts``), world size, workers."""
        from conan_core.train.data import file_hash, fingerprint
        from conan_core.train.prepare import tokenizer_dir

        tok_hash = file_hash(tokenizer_dir(self.cfg, self.run_dir) / "tokenizer.json")
        return {"data_fingerprint": fingerprint(*parts, tok_hash), "world_size": self.env.world_size,
                "num_workers": self.cfg.data.num_workers}


@dataclass
class StageWiring:
    """What a stage's ``wire`` hands the driver.

    ``objective`` (model + pooler + loss), ``stream`` (the data, :mod:`conan_core.train.streams`)
    and ``world`` (what a resume must find unchanged); ``model``: the backbone (saved with
    ``save_pretrained``); ``pooler``: saved as ``pooler.safetensors`` when it has weights;
    ``embedder``: contents of ``embedder.json`` (embedding stages); ``extra``: plain values added to
    the summary and stored in the checkpoint; ``finish``: called after training for final counters
    (e.g. the miner's statistics).
    """

    objective: nn.Module
    stream: Any
    world: dict
    model: nn.Module
    pooler: nn.Module | None = None
    embedder: dict | None = None
    extra: dict = field(default_factory=dict)
    finish: Callable[[], dict] | None = None


# ----------------------------------------------------------------------------- start model

def previous_stage(cfg: Any, stage: str) -> str | None:
    """The nearest earlier enabled stage (whose ``final/`` this stage starts from), or None."""
    earlier = STAGES[:STAGES.index(stage)]
    return next((s for s in reversed(earlier) if getattr(cfg, s).enabled), None)


def start_model(ctx: StageContext) -> nn.Module:
    """A fresh model for pretraining (or when no earlier stage is enabled), else the previous
    stage's ``final/`` (RUNDIR contract: each stage reads the previous one's final directory)."""
    from conan_core.builder import build_backbone

    backbone = build_backbone(ctx.cfg)
    vocab = len(ctx.tokenizer)
    prev = previous_stage(ctx.cfg, ctx.stage)
    if prev is None:
        if ctx.stage != "pretrain":
            source = getattr(backbone.config, "path", None)
            if source:
                log.info("%s: no earlier stage is enabled: starting from the pretrained model in %s", ctx.stage, source)
            else:
                log.warning("%s: no earlier stage is enabled: starting from a randomly initialised model", ctx.stage)
        return backbone.build(vocab)
    done = ctx.run_dir / prev / "DONE"
    if not done.is_file():
        raise ConanError(f"{ctx.stage} starts from {prev}/final, but stage {prev} has not finished ({done} is "
                         f"missing): run `conan {prev} CONFIG --run-dir {ctx.run_dir}` first, or disable "
                         f"{prev} ({prev}.enabled: false)")
    return load_final_model(backbone, ctx.run_dir / prev / "final", vocab)


def load_final_model(backbone: Any, final_dir: Path, vocab: int) -> nn.Module:
    """The model saved in ``final_dir`` (float32, CPU), in the same wrapper ``backbone.build`` makes,
    with the backbone's LoRA adapters (if any) freshly injected: ``final/`` holds merged weights."""
    from transformers import AutoModelForCausalLM

    import conan_core.model  # noqa: F401  (registers model_type "conan" with the Auto classes)
    from conan_core.backbones.hf import HFDecoder
    from conan_core.embedder import quiet_transformers

    shell = backbone.build(vocab, meta=True)
    kwargs = {"dtype": torch.float32}
    if isinstance(shell, HFDecoder):
        kwargs["attn_implementation"] = backbone.config.attn_implementation
    with quiet_transformers():
        loaded = AutoModelForCausalLM.from_pretrained(str(final_dir), **kwargs)
    rows = loaded.get_input_embeddings().weight.shape[0]
    if rows != vocab:
        raise ConanError(f"{final_dir}: the model has {rows} token embeddings but the tokenizer has {vocab} tokens; "
                         "the run's tokenizer changed since that stage was trained")
    model = HFDecoder(loaded) if isinstance(shell, HFDecoder) else loaded
    if getattr(backbone.config, "gradient_checkpointing", False):
        from conan_core.backbones.conan import enable_checkpointing

        enable_checkpointing(loaded)
    return backbone.adapt(model)


# ----------------------------------------------------------------------------- final save

def write_json_atomic(path: Path, data: Any) -> None:
    atomic_write_json(path, data, indent=1, sort_keys=True, default=str)


def save_final(ctx: StageContext, plan: StageWiring, trainer: Any) -> Path:
    """``<stage>/final``: ``save_pretrained`` model, tokenizer, ``embedder.json``, ``pooler.safetensors``.

    Written into ``final.tmp`` and renamed; every rank calls it (FSDP2 gathers the weights)."""
    full = D.full_model_state(trainer.raw, "fsdp") if trainer.parallel == "fsdp" else None
    final = ctx.stage_dir / "final"
    if ctx.env.is_main:
        tmp = ctx.stage_dir / "final.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _write_final(ctx, plan, full, tmp)
        publish_dir(tmp, final)
    D.barrier(ctx.env)
    return final


def publish_copy(source: Path, dest: Path) -> Path:
    """``dest`` as a copy of the model directory ``source`` (``final/`` from ``best/``), through
    ``dest.tmp`` and a rename. Files are hard-linked where the file system allows (no second copy
    of a large model on disk; every writer replaces files by renaming, so the links never change)."""
    import os

    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    with writing(tmp):
        shutil.copytree(source, tmp, copy_function=link_or_copy)
    return publish_dir(tmp, dest)


def _write_final(ctx: StageContext, plan: StageWiring, full: dict | None, tmp: Path) -> None:
    from conan_core.backbones.hf import HFDecoder
    from conan_core.backbones.lora import adapter_host, has_lora, lora_spec_of, merged_state_dict
    from conan_core.builder import build_backbone
    from conan_core.embedder import quiet_transformers

    with writing(tmp):
        model = plan.model
        state = None
        if full is not None:  # sharded weights: save the gathered full copy
            prefix = "model.hf." if isinstance(model, HFDecoder) else "model."
            state = {k[len(prefix):]: v for k, v in full.items() if k.startswith(prefix)}
        if has_lora(model):
            # final/ holds plain merged weights: the next stage, Embedder and export never see adapters
            spec = lora_spec_of(build_backbone(ctx.cfg).config)
            state = merged_state_dict(state if state is not None else adapter_host(model).state_dict(), spec.scaling)
        with quiet_transformers():  # no "Writing model shards" bar
            if state is not None:
                model.save_pretrained(str(tmp), state_dict=state)
            else:
                model.save_pretrained(str(tmp))
        ctx.tokenizer.save_pretrained(str(tmp))
        if plan.embedder is not None:
            (tmp / "embedder.json").write_text(json.dumps(plan.embedder, indent=2) + "\n", encoding="utf-8")
        if plan.pooler is not None and any(True for _ in plan.pooler.parameters()):
            from safetensors.torch import save_file

            if full is not None:
                pstate = {k[len("pooler."):]: v for k, v in full.items() if k.startswith("pooler.")}
            else:
                pstate = plan.pooler.state_dict()
            save_file({k: v.detach().to("cpu").contiguous() for k, v in pstate.items()}, str(tmp / "pooler.safetensors"))


def embedder_settings(ctx: StageContext, components: Any, hidden_size: int) -> dict:
    """``embedder.json`` of an embedding stage (docs/RUNDIR.md): the pooler, the mask and alpha the
    stage ended with, and the Matryoshka dims the loss trained (``[]`` without MRL)."""
    from conan_core.losses.matryoshka import MatryoshkaLoss

    dims: list[int] = []
    for module in components.loss.modules():
        if isinstance(module, MatryoshkaLoss):
            dims = [d for d, _ in module.dims_for(hidden_size)]
            break
    c = ctx.stage_cfg
    return {"pooler": components.specs["pooler"], "mask": components.specs["mask"],
            "alpha": float(components.alpha(c.steps)), "max_length": int(c.max_length),
            "query_instruction": c.query_instruction, "normalize": True, "mrl_dims": dims, "stage": ctx.stage}


def hidden_size(model: nn.Module) -> int:
    return int(model.config.hidden_size)
