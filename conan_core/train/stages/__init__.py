"""The four training stages and :func:`run_stage`, the one entry point that runs any of them.

``run_stage(cfg, stage, run_dir)``:

1. returns the summary in ``<run>/<stage>/DONE`` when the stage already finished;
2. starts the process group when launched by ``torchrun`` (no-op otherwise);
3. rank 0 prepares the run (demo data, tokenizer: :func:`conan_core.train.prepare.prepare_run`) and
   writes ``config.yaml`` when missing;
4. the model it starts from (:func:`~conan_core.train.stages.common.start_model`), the stage's
   components (:func:`conan_core.builder.build_stage`, the only place YAML becomes objects) and
   the stage module's ``wire(ctx, model, components)`` (objective, data stream, world fingerprint);
5. :class:`~conan_core.train.loop.Trainer` trains (resuming from the newest committed checkpoint),
   logging to the run's trackers (``report_to``) and, with ``eval_every``, evaluating during
   training (:mod:`conan_core.train.evaluation`);
6. ``final/`` (``save_pretrained`` model, tokenizer, ``embedder.json``, ``pooler.safetensors``) and
   ``DONE`` (JSON summary) are written; after SIGTERM it returns ``preempted: True`` instead, with
   neither written. With ``keep_best`` (``final: best``, the default) ``final/`` is a copy of
   ``best/``, the best evaluated model, so the next stage, the export and ``Embedder.load`` use it;
   with ``final: last`` it holds the last step's model and ``best/`` stays beside it.
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from conan_core.config import STAGES
from conan_core.errors import ConanError
from conan_core.rundir import RunLock, check_run_dir


def _wirings() -> dict:
    from conan_core.train.stages import pretrain, sft, supervised, weak

    return {"pretrain": pretrain.wire, "sft": sft.wire, "weak": weak.wire, "supervised": supervised.wire}


def run_stage(cfg: Any, stage: str, run_dir: str | Path, *, resume: bool = True, progress: bool = True,
              allow_data_change: bool = False, fallback_checkpoint: bool = False) -> dict:
    """Run (or resume, or skip when finished) one stage; returns its summary.

    Summary keys: ``stage, steps, final_loss, seconds, counters, skipped_steps, tokens, preempted,
    resumed_from`` (+ stage extras such as ``teacher``). ``resume=False`` discards the stage's
    checkpoints and starts it over. ``allow_data_change`` resumes even though the data, world size
    or worker count changed (the data position restarts); ``fallback_checkpoint`` skips a corrupt
    newest checkpoint (WARNING) instead of failing.
    """
    from conan_core.train import distributed as D

    if stage not in STAGES:
        from conan_core.errors import close_matches

        hint = close_matches(stage, STAGES)
        raise ConanError(f"unknown stage {stage!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                         + f"; valid: {', '.join(STAGES)}")
    run_dir = Path(run_dir)
    env = D.init_distributed(cfg.device)
    # every entry point runs the same guards as `conan run`: one writer (rank 0 holds the lock for
    # all ranks) and the run's own config; a refusal is broadcast so no rank waits at a barrier
    lock = RunLock(run_dir) if env.is_main else nullcontext()
    refusal: ConanError | None = None
    if env.is_main:
        try:
            lock.__enter__()
        except ConanError as exc:
            refusal, lock = exc, nullcontext()
    if refusal is None:
        try:
            check_run_dir(cfg, run_dir)
        except ConanError as exc:
            refusal = exc
    reason = D.broadcast_object(str(refusal) if refusal is not None and env.is_main else None, env)
    if refusal is not None or reason is not None:
        lock.__exit__(None, None, None)
        raise refusal if refusal is not None else ConanError(reason)
    try:
        return _run_stage(cfg, stage, run_dir, env, resume=resume, progress=progress,
                          allow_data_change=allow_data_change, fallback_checkpoint=fallback_checkpoint)
    finally:
        lock.__exit__(None, None, None)


def _run_stage(cfg: Any, stage: str, run_dir: Path, env: Any, *, resume: bool, progress: bool,
               allow_data_change: bool, fallback_checkpoint: bool) -> dict:
    from conan_core.builder import build_stage
    from conan_core.config import dump_config
    from conan_core.tokenizer import load_tokenizer
    from conan_core.config import resolve
    from conan_core.train import distributed as D
    from conan_core.train.evaluation import stage_evaluation
    from conan_core.train.loop import RunFlags, Trainer
    from conan_core.train.prepare import prepare_run, tokenizer_dir
    from conan_core.train.rng import seed_everything
    from conan_core.train.stages.common import StageContext, hidden_size, start_model, write_json_atomic

    stage_dir = run_dir / stage
    done = stage_dir / "DONE"
    if done.is_file():
        return json.loads(done.read_text(encoding="utf-8"))
    stage_cfg = getattr(cfg, stage)
    if not stage_cfg.enabled:
        raise ConanError(f"stage {stage} is disabled ({stage}.enabled: false)")
    t0 = time.perf_counter()
    if env.is_main:
        prepare_run(cfg, run_dir, progress=progress)
        if not (run_dir / "config.yaml").is_file():
            from conan_core import provenance

            dump_config(cfg, run_dir / "config.yaml")
            provenance.write_once(cfg, run_dir)
        stage_dir.mkdir(parents=True, exist_ok=True)
    D.barrier(env)

    seed_everything(cfg.seed, 0)  # the same model initialisation on every rank
    tokenizer = load_tokenizer(tokenizer_dir(cfg, run_dir))
    ctx = StageContext(cfg=cfg, stage=stage, run_dir=run_dir, env=env, tokenizer=tokenizer,
                       allow_data_change=allow_data_change, progress=progress)
    model = start_model(ctx)
    if stage_cfg.compile:
        _compile(model, stage, stage_cfg.compile_backend)
    components = build_stage(cfg, stage, hidden_size(model))
    plan = _wirings()[stage](ctx, model, components)
    evaluation = stage_evaluation(ctx, plan, components)
    # training randomness starts from the same state whatever the preparation consumed
    data_generator = seed_everything(cfg.seed, env.rank)
    flags = RunFlags(resume=resume, allow_data_change=allow_data_change, fallback_checkpoint=fallback_checkpoint,
                     progress=progress)

    def trackers(start_step: int) -> list:
        return components.trackers.build(log_dir=stage_dir, run_dir=run_dir, run_name=cfg.name, stage=stage,
                                         run_config=resolve(cfg), start_step=start_step)

    trainer = Trainer(plan.objective, plan.stream, components.config, stage_dir, name=stage,
                      optimizer=components.optimizer, alpha_fn=components.alpha, precision=cfg.precision,
                      parallel=cfg.parallel, flags=flags, env=env, world=plan.world, data_generator=data_generator,
                      trainer_state=plan.extra, trackers=trackers, evaluation=evaluation,
                      fsdp_mixed_precision=cfg.fsdp_mixed_precision)
    try:
        summary = trainer.fit()
    finally:
        plan.stream.close()
    summary.update(plan.extra)
    if plan.finish is not None:
        summary["counters"].update(plan.finish())
    if summary["preempted"]:
        return summary
    _save_final(ctx, plan, trainer, evaluation)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    if env.is_main:
        write_json_atomic(done, summary)
    D.barrier(env)
    return summary


def _compile(model: Any, stage: str, backend: str) -> None:
    """``<stage>.compile: true``: compile every decoder block in place (the weights, their names and
    the checkpoints are unchanged, so resume and ``final/`` work as without)."""
    import torch

    from conan_core.model.compile import compile_blocks

    target = getattr(model, "hf", model)  # an hf backbone's wrapper holds the transformers model
    try:
        compile_blocks(target, backend=backend)
    except ConanError as exc:
        raise ConanError(f"{stage}.compile: {exc}; set {stage}.compile: false for this backbone") from None
    # causal, soft (bias) and bidirectional kernel paths, padded or not, each compile once: more
    # variants than torch's default limit of 8 per code object
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)


def _save_final(ctx: Any, plan: Any, trainer: Any, evaluation: Any) -> None:
    """``final/``: the best evaluated model (``keep_best.final: best``) or the last step's."""
    from conan_core.train import distributed as D
    from conan_core.train.evaluation import best_dir
    from conan_core.train.stages.common import publish_copy, save_final

    keep = ctx.stage_cfg.keep_best
    if evaluation is not None and keep is not None and keep.final == "best":
        source = best_dir(ctx.stage_dir, evaluation.best_step) if ctx.env.is_main else None
        found = D.broadcast_object(str(source) if source is not None else None, ctx.env)
        if found is not None:
            if ctx.env.is_main:
                publish_copy(Path(found), ctx.stage_dir / "final")
            D.barrier(ctx.env)
            return
        import logging

        logging.getLogger("conan_core.train").warning(
            "%s: keep_best found no best model (no evaluation gave %s a comparable value): final/ holds the last "
            "step's model", ctx.stage, keep.metric)
    save_final(ctx, plan, trainer)


__all__ = ["run_stage", "STAGES"]
