"""Evaluation during training: ``eval_every``, ``keep_best`` and ``early_stopping`` of a stage.

Every ``eval_every`` steps and at the stage's last step, the trainer hands the model being trained
to :meth:`StageEvaluation.run`: the run's evaluators (``eval.evaluators``, BM25 off: it does not
change while the model trains) encode the held-out data of ``eval.data`` (default ``eval/`` under
the data root), in domain and, when ``out_of_domain/`` exists, out of domain
(:func:`conan_core.eval.report.evaluate_domains`). What it writes:

* the aggregate metrics, logged with the step as ``eval/<task>/<metric>`` (out-of-domain tasks are
  named ``out_of_domain/<task>``) plus ``eval/seconds``, in ``metrics.jsonl`` and every tracker;
* every metric (per-language rows included) in ``<stage>/eval/step-NNNNNN.json``;
* with ``keep_best``: ``<stage>/best/`` (a model directory like ``final/``, whose
  ``embedder.json`` has the mask alpha of that step, plus ``best.json``: step, metric, value)
  whenever the metric improves on the best so far;
* with ``early_stopping``: the stage stops (after committing a checkpoint) once ``patience``
  evaluations in a row did not improve on the best by more than ``min_delta``.

The trainer captures every random-number state before and restores it after an evaluation, and
restores every module's train/eval mode, so evaluating changes no training number: a run with
``eval_every`` trains bit-identical weights to one without (until early stopping stops it). The
best-so-far state (best value and step, evaluations without improvement, the history, whether the
stage stopped) is part of every checkpoint; a resumed stage re-evaluates the steps after its
checkpoint and, training being exact, reaches the same decisions.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from conan_core.errors import ConanError

log = logging.getLogger("conan_core.train")

BEST_FILE = "best.json"
_STEP_FILE = re.compile(r"step-(\d+)\.json$")


@dataclass
class EvalOutcome:
    """What one evaluation decided (every rank receives it): the scalars to log, whether the
    watched metric improved, and whether the stage stops now."""

    scalars: dict[str, float]
    improved: bool = False
    stop: bool = False


def flat_metrics(results: dict[str, dict]) -> dict[str, float]:
    """``{"<task>/<metric>": value}`` of the aggregate metrics of ``results`` (task names as
    :func:`~conan_core.eval.report.evaluate_domains` gives them); per-language rows, counts and BM25
    references are left out."""
    from conan_core.eval.base import is_count

    out = {}
    for task, metrics in results.items():
        for key, value in metrics.items():
            if "/" in key or is_count(key) or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            out[f"{task}/{key}"] = float(value)
    return out


class StageEvaluation:
    """Evaluation during training of one stage (see the module docstring).

    ``embedder_for(step)`` returns an :class:`~conan_core.embedder.Embedder` over the live model
    with the stage's pooler and its mask at that step's alpha; ``save_best(step, info)`` writes the
    live model into ``best/``; ``faults`` is the trainer's fault injector. Only rank 0 calls
    :meth:`run`; every rank keeps :attr:`stopped` (from the broadcast outcome).
    """

    def __init__(self, *, stage: str, settings: Any, evaluators: list, eval_root: Path, out_dir: Path,
                 embedder_for: Callable[[int], Any], save_best: Callable[[int, dict], None]):
        self.stage = stage
        self.every = int(settings.eval_every)
        self.steps = int(settings.steps)
        self.keep_best = settings.keep_best
        self.early = settings.early_stopping
        self.evaluators = evaluators
        self.eval_root = Path(eval_root)
        self.out_dir = Path(out_dir)
        self.embedder_for = embedder_for
        self.save_best = save_best
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0
        self.stopped_at: int | None = None
        self.history: list[list] = []  # [step, watched value] per evaluation
        self.seconds = 0.0

    # ------------------------------------------------------------------ schedule
    def due(self, step: int) -> bool:
        """Whether step ``step`` (1-based) ends with an evaluation."""
        return step % self.every == 0 or step == self.steps

    @property
    def stopped(self) -> bool:
        return self.stopped_at is not None

    # ------------------------------------------------------------------ one evaluation
    def run(self, step: int, faults: Any = None) -> EvalOutcome:
        """Evaluate the live model after step ``step``; write the step's results, update the best
        model and the early-stopping count; returns the outcome (rank 0 only)."""
        from conan_core.eval.report import evaluate_domains, write_metrics

        t0 = time.perf_counter()
        embedder = self.embedder_for(step)
        results = evaluate_domains(embedder, self.eval_root, self.evaluators, missing="skip")
        seconds = time.perf_counter() - t0
        if faults is not None:
            faults.in_eval(step)
        self.seconds += seconds
        flat = flat_metrics(results)
        write_metrics(results, self.out_dir / "eval" / f"step-{step:06d}.json")
        scalars = {f"eval/{name}": value for name, value in flat.items()}
        scalars["eval/seconds"] = round(seconds, 3)
        if self.keep_best is None:
            self.history.append([step, None])
            return EvalOutcome(scalars)
        value = self._watched(flat)
        improved, significant = self._compare(value)
        self.history.append([step, value])
        if improved:
            self.best_value, self.best_step = value, step
            self.save_best(step, {"step": step, "metric": self.keep_best.metric, "value": value,
                                  "mode": self.keep_best.mode})
        self.bad_evals = 0 if significant else self.bad_evals + 1
        stop = self.early is not None and self.bad_evals >= self.early.patience and step < self.steps
        if stop:
            self.stopped_at = step
            log.info("%s: early stopping at step %d: %s did not improve by more than %g for %d evaluations "
                     "(best %.6g at step %s)", self.stage, step, self.keep_best.metric, self.early.min_delta,
                     self.bad_evals, self.best_value if self.best_value is not None else float("nan"), self.best_step)
        return EvalOutcome(scalars, improved=improved, stop=stop)

    def _watched(self, flat: dict[str, float]) -> float:
        metric = self.keep_best.metric
        if metric not in flat:
            shown = ", ".join(sorted(flat)) or "none (no evaluation data was found)"
            raise ConanError(f"{self.stage}.keep_best.metric: the evaluation on {self.eval_root} gave no metric "
                             f"{metric!r}; it gave: {shown}. Name one of these, or add the task's data "
                             "(eval.data)")
        return flat[metric]

    def _compare(self, value: float) -> tuple[bool, bool]:
        """(better than the best so far, better by more than early_stopping.min_delta)."""
        if value is None or math.isnan(value):
            return False, False
        if self.best_value is None:
            return True, True
        delta = value - self.best_value if self.keep_best.mode == "max" else self.best_value - value
        margin = self.early.min_delta if self.early is not None else 0.0
        return delta > 0, delta > margin

    def accept(self, outcome: EvalOutcome, step: int) -> None:
        """On the ranks that did not evaluate: take the decision rank 0 broadcast."""
        if outcome.stop:
            self.stopped_at = step

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        return {"best_value": self.best_value, "best_step": self.best_step, "bad_evals": self.bad_evals,
                "stopped_at": self.stopped_at, "history": [list(h) for h in self.history],
                "seconds": round(self.seconds, 3)}

    def load_state_dict(self, state: dict) -> None:
        self.best_value = state.get("best_value")
        self.best_step = state.get("best_step")
        self.bad_evals = int(state.get("bad_evals", 0))
        self.stopped_at = state.get("stopped_at")
        self.history = [list(h) for h in state.get("history", [])]
        self.seconds = float(state.get("seconds", 0.0))

    def rewind(self, step: int) -> None:
        """Forget the results files of evaluations after ``step`` (a resume re-runs them); at step 0
        (a stage starting over) the best model of an earlier attempt too."""
        for path in (self.out_dir / "eval").glob("step-*.json"):
            match = _STEP_FILE.search(path.name)
            if match and int(match.group(1)) > step:
                path.unlink()
        if step == 0:
            for name in ("best", "best.old", "best.tmp"):
                shutil.rmtree(self.out_dir / name, ignore_errors=True)

    def summary(self) -> dict:
        """For the stage's ``DONE``: evaluations, the watched metric, the best and early stopping."""
        out = {"evaluations": len(self.history), "eval_seconds": round(self.seconds, 3)}
        if self.keep_best is not None:
            out.update(metric=self.keep_best.metric, mode=self.keep_best.mode, best_step=self.best_step,
                       best_value=self.best_value, final=self.keep_best.final)
        if self.early is not None:
            out["stopped_early_at"] = self.stopped_at
        return out


# ----------------------------------------------------------------------------- wiring

def stage_evaluation(ctx: Any, plan: Any, components: Any) -> StageEvaluation | None:
    """The :class:`StageEvaluation` of a stage with ``eval_every`` (None without), over the model and
    pooler the stage trains; raises ConanError when there is no evaluation data to run on."""
    from conan_core.train.data import eval_root

    c = ctx.stage_cfg
    if c.eval_every is None:
        return None
    if ctx.env.world_size > 1 and ctx.cfg.parallel == "fsdp":
        raise ConanError(f"{ctx.stage}.eval_every: evaluation during training needs the whole model on rank 0, "
                         "which FSDP shards; use parallel: ddp, or evaluate the checkpoints afterwards")
    root = eval_root(ctx.cfg, ctx.run_dir)
    if not root.is_dir():
        raise ConanError(f"{ctx.stage}.eval_every is set but there is no evaluation data at {root}: set eval.data "
                         "to an eval root (retrieval/, sts.jsonl ... and optionally out_of_domain/), or remove "
                         f"{ctx.stage}.eval_every")
    pooler = plan.pooler if plan.pooler is not None else _lm_pooler(plan.model)
    return StageEvaluation(stage=ctx.stage, settings=c, evaluators=components.evaluators, eval_root=root,
                           out_dir=ctx.stage_dir,
                           embedder_for=lambda step: _embedder(ctx, plan, components, pooler, step),
                           save_best=lambda step, info: save_best(ctx, plan, components, step, info))


def _lm_pooler(model: Any) -> Any:
    """Pretraining and SFT train no pooler: evaluate them as :class:`~conan_core.embedder.Embedder`
    loads their ``final/`` (the default pooler, mean; it has no weights)."""
    from conan_core.embedder import EmbedderSettings
    from conan_core.registries import REGISTRIES

    return REGISTRIES["poolers"].build(EmbedderSettings().pooler, "evaluation pooler",
                                       hidden_size=int(model.config.hidden_size))


def embedder_settings_at(ctx: Any, plan: Any, components: Any, step: int) -> dict:
    """``embedder.json`` of the model after step ``step``: the stage's settings with the mask's
    alpha at that step (embedding stages), or what Embedder assumes for an LM stage's final/."""
    from conan_core.embedder import EmbedderSettings

    c = ctx.stage_cfg
    if plan.embedder is not None:
        return {**plan.embedder, "alpha": float(components.alpha(step))}
    settings = EmbedderSettings(max_length=int(c.max_length), query_instruction=ctx.cfg.supervised.query_instruction,
                                stage=ctx.stage)
    return settings.to_dict()


def _embedder(ctx: Any, plan: Any, components: Any, pooler: Any, step: int) -> Any:
    import torch

    from conan_core.embedder import Embedder, EmbedderSettings

    settings = EmbedderSettings.from_dict(embedder_settings_at(ctx, plan, components, step), f"{ctx.stage} evaluation")
    # float32 on the training device: the weights are used as they are, never cast or moved
    return Embedder(plan.model, ctx.tokenizer, pooler, settings, device=str(ctx.env.device), dtype=torch.float32)


def save_best(ctx: Any, plan: Any, components: Any, step: int, info: dict) -> Path:
    """Write the live model into ``<stage>/best/`` (through ``best.tmp``, renamed into place), with
    the embedder settings of step ``step`` and ``best.json``; rank 0 only."""
    from conan_core.fsio import atomic_write_json, publish_dir
    from conan_core.train.stages.common import _write_final

    tmp = ctx.stage_dir / "best.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    at_step = replace(plan, embedder=embedder_settings_at(ctx, plan, components, step)
                      if plan.embedder is not None else None)
    _write_final(ctx, at_step, None, tmp)
    atomic_write_json(tmp / BEST_FILE, info)
    best = ctx.stage_dir / "best"
    publish_dir(tmp, best)
    log.info("%s: best %s so far (%.6g) at step %d -> %s", ctx.stage, info["metric"], info["value"], step, best)
    return best


def best_dir(stage_dir: Path, step: int | None) -> Path | None:
    """The directory holding the best model of step ``step``: ``<stage>/best``, or ``best.old`` when
    a process died between the two renames that replace ``best`` (its ``best.json`` names the
    step); None when neither holds that step."""
    for name in ("best", "best.old"):
        path = Path(stage_dir) / name / BEST_FILE
        if step is not None and path.is_file() and json.loads(path.read_text(encoding="utf-8")).get("step") == step:
            return path.parent
    return None
