"""The training loop: one class, read top to bottom (style rule 7: no callback maze).

A stage hands the :class:`Trainer`:

* an **objective**: an ``nn.Module`` whose ``forward(batch, *, step, alpha)`` returns
  ``{"loss": 0-dim tensor, "metrics": {name: float}, "observations": ... (optional)}`` (model +
  pooler + loss live inside it, so DDP / FSDP2 wrap one module and the checkpoint holds every
  trainable parameter). An objective with ``handles_backward = True`` (GradCache) runs its own
  backward inside ``forward`` (it gets an extra ``backward_scale`` argument) and returns a
  detached loss;
* a **stream** (:mod:`conan_core.train.streams`): ``next_batch() -> dict`` (tensors, nested dicts
  of tensors, ``"keys"``: the ``(url, key)`` of every sample consumed, ``"tokens"``: real tokens
  in the batch), ``state_dict()`` / ``load_state_dict()`` (exact position) and ``counters()``;
  optionally ``observe(observations)``, called after every micro-batch with what the objective
  returned (the supervised stream's miner learns the negatives' scores this way), and
  ``window_metrics()``, logged every ``log_every`` steps (over the window since the previous call);
* the stage's **settings** (its config section: steps, lr, accumulation, clipping, checkpoints
  ...), an **optimizer factory** (``build(named_parameters, lr, weight_decay)``) and
  ``alpha_fn(step) -> float`` (the soft-mask schedule), all from
  :func:`conan_core.builder.build_stage`, plus the run's :class:`RunFlags`.

One optimizer step ``s`` (1-based):

1. LR for 0-based index ``s - 1`` (warm-up + decay), alpha for ``s``;
2. ``grad_accum`` micro-batches: forward (bf16 autocast on CUDA), ``loss / grad_accum`` backward,
   gradient all-reduce only on the last micro-batch;
3. gradient norm (clipped to ``max_grad_norm``); one all-reduce of ``[loss, non-finite, SIGTERM,
   tokens]`` so every rank takes the same decision;
4. **non-finite guard, before ``optimizer.step()``**: policy ``stop`` raises
   :class:`NonFiniteLossError` (step, batch keys; weights unchanged), ``skip`` drops the gradients
   and counts the step;
5. ``steps.jsonl`` line; the step's scalars to every tracker (``metrics.jsonl`` and ``report_to``):
   loss, lr, alpha, grad norm and every metric the objective returned (the loss parts, e.g.
   ``loss@16`` or ``cosent``, on every step they occur, averaged over the micro-batches that had
   them), plus, every ``log_every`` steps, tokens/s, skipped steps and the stream's
   ``window_metrics()`` over the window (the miner's counters); progress bar;
6. every ``eval_every`` steps and at the last one, evaluation during training
   (:mod:`conan_core.train.evaluation`): rank 0 evaluates with every random-number state captured
   before and restored after, and every module's train/eval mode restored, so training numbers do
   not change; its metrics join the step's scalars; ``keep_best`` / ``early_stopping`` decide;
7. atomic checkpoint every ``checkpoint_every`` steps, at the last step, when early stopping
   stops the stage, and after SIGTERM (then the loop returns with ``preempted=True``: the process
   exits 0).

Resume loads the newest committed checkpoint: model, optimizer, LR schedule, the trainer
counters, the evaluation's best-so-far state, and per rank every RNG state, the stream position
and the extra states; the logs (and the evaluation results after the checkpoint) are rewound to
the checkpoint's step, so the continued run is bit-exact with an uninterrupted one. Trackers are
built (rank 0) after the resume, knowing the step they continue from.
"""

from __future__ import annotations

import logging
import shutil
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import nn

from conan_core.errors import ConanError
from conan_core.train import distributed as D
from conan_core.train.checkpoint import CheckpointError, CheckpointManager, load_json, load_object, load_tensors
from conan_core.train.faults import FaultInjector
from conan_core.train.metrics import MetricsLog, StepLog, truncate_jsonl
from conan_core.train.rng import capture_rng_state, preserved_rng, restore_rng_state
from conan_core.train.schedule import WarmupDecay

log = logging.getLogger("conan_core.train")

#: fields of the "world" a checkpoint was written in; a resume in another world is refused
WORLD_FIELDS = ("data_fingerprint", "world_size", "num_workers")


class NonFiniteLossError(ConanError):
    """The loss or the gradient norm was NaN/Inf at ``step`` (policy ``stop``); weights are unchanged."""

    exit_code = 5

    def __init__(self, stage: str, step: int, loss: float, grad_norm: float, keys: list):
        self.stage, self.step, self.loss, self.grad_norm, self.keys = stage, step, loss, grad_norm, list(keys)
        shown = ", ".join(f"{u}:{k}" for u, k in self.keys[:16])
        more = f" (+{len(self.keys) - 16} more)" if len(self.keys) > 16 else ""
        super().__init__(
            f"{stage}: non-finite loss at step {step} (loss={loss}, grad_norm={grad_norm}) before "
            f"optimizer.step(): the weights are those after step {step - 1}. Batch keys on this rank: "
            f"{shown}{more}. Lower {stage}.lr, check the data, or set {stage}.nan_policy: skip.")


class NonFiniteWeightsError(ConanError):
    """An optimizer step wrote NaN/Inf into the weights (whatever ``nan_policy`` says: a skip
    cannot undo a step that already happened). The last committed checkpoint is intact."""

    exit_code = 5

    def __init__(self, stage: str, step: int, bad: list[str]):
        self.stage, self.step, self.bad = stage, step, list(bad)
        shown = ", ".join(self.bad[:6]) + (f" (+{len(self.bad) - 6} more)" if len(self.bad) > 6 else "")
        super().__init__(
            f"{stage}: the optimizer step {step} left non-finite values in {len(self.bad)} parameter "
            f"tensor(s) ({shown}) although the loss and gradient norm were finite: the learning rate "
            f"or the update is too large. Nothing was marked done; the last committed checkpoint holds "
            f"finite weights. Lower {stage}.lr (or clip harder with {stage}.max_grad_norm) and re-run "
            f"with --restart for this stage.")


class WorldChangedError(ConanError):
    """A resume found a checkpoint written with another data / world size / worker count."""

    def __init__(self, stage: str, path: Path, name: str, old: Any, new: Any):
        self.field, self.old, self.new = name, old, new
        super().__init__(
            f"{stage}: cannot resume from {path}: {name} changed ({old!r} -> {new!r}); the data "
            "position in the checkpoint would be wrong. Restore the original setting, start the stage "
            "afresh (delete its directory), or pass --allow-data-change to continue anyway "
            "(the data position is then restarted).")


@dataclass
class StepResult:
    """What one optimizer step produced (rank-agreed values: loss is the mean over ranks)."""

    loss: float
    grad_norm: float
    skipped: bool
    keys: list
    tokens: int
    alpha: float
    metrics: dict


class BatchStream(Protocol):
    def next_batch(self) -> dict: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...
    def counters(self) -> dict: ...


@dataclass(frozen=True)
class RunFlags:
    """How a stage is started (command-line flags, not config): resume from the newest committed
    checkpoint or start over, accept changed data, skip a corrupt checkpoint, show a progress bar."""

    resume: bool = True
    allow_data_change: bool = False
    fallback_checkpoint: bool = False
    progress: bool = True


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 on CUDA for ``auto``; ``bf16`` anywhere when asked; None (fp32) otherwise."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def _local(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor from a DTensor (FSDP2 gradient norms are DTensors)."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def move_to(batch: Any, device: torch.device) -> Any:
    """Tensors (also inside dicts / lists / tuples) on ``device``; other values unchanged."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and any(isinstance(v, (torch.Tensor, dict)) for v in batch):
        return type(batch)(move_to(v, device) for v in batch)
    return batch


class Trainer:
    """Runs ``settings.steps`` optimizer steps of one stage; see the module docstring."""

    def __init__(self, objective: nn.Module, stream: BatchStream, settings: Any, out_dir: Path, *, name: str,
                 optimizer: Any, alpha_fn: Callable[[int], float] | None = None, precision: str = "auto",
                 parallel: str = "auto", flags: RunFlags = RunFlags(), env: D.DistEnv | None = None,
                 world: dict | None = None, data_generator: torch.Generator | None = None,
                 trainer_state: dict | None = None, trackers: Callable[[int], list] | None = None,
                 evaluation: Any = None, fsdp_mixed_precision: bool = True):
        self.settings = settings
        self.name = name
        self.flags = flags
        self.env = env or D.DistEnv()
        self.out_dir = Path(out_dir)
        self.stream = stream
        self.world = dict(world or {})
        self.world.setdefault("world_size", self.env.world_size)
        self.alpha_fn = alpha_fn or (lambda step: 0.0)
        self.data_generator = data_generator
        # stage-specific plain data saved with the trainer state (e.g. teacher filter counts)
        self.extra = dict(trainer_state or {})
        # trackers(start_step) -> the report_to trackers (metrics.jsonl alone when None)
        self.trackers = trackers
        # evaluation during training (conan_core.train.evaluation.StageEvaluation) or None
        self.evaluation = evaluation
        self.faults = FaultInjector.from_env(self.env.rank, name)

        self.raw = objective.to(self.env.device)
        self.handles_backward = bool(getattr(objective, "handles_backward", False))
        # an objective that runs its own backward passes cannot go through DDP's hooks:
        # its gradients are averaged explicitly (distributed.average_gradients)
        strategy = "none" if self.handles_backward else parallel
        self.amp_dtype = autocast_dtype(precision, self.env.device)
        # FSDP2 under bf16 autocast all-gathers bf16 weights and reduces fp32 gradients
        # (fsdp_mixed_precision); the sharded fp32 weights stay the optimizer's master copy
        self.fsdp_param_dtype = self.amp_dtype if fsdp_mixed_precision else None
        self.model, self.parallel = D.wrap_model(self.raw, self.env, strategy, param_dtype=self.fsdp_param_dtype)
        if self.parallel != "fsdp":
            self.fsdp_param_dtype = None
        if evaluation is not None and self.parallel == "fsdp":
            raise ConanError(f"{name}.eval_every: evaluation during training needs the whole model on rank 0, "
                             "which FSDP shards; use parallel: ddp, or evaluate the checkpoints afterwards")
        self.optimizer = optimizer.build(self.model.named_parameters(), settings.lr, settings.weight_decay)
        self.schedule = WarmupDecay(self.optimizer, settings.steps, settings.warmup_ratio, settings.lr_decay)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]

        self.ckpt = CheckpointManager(self.out_dir / "checkpoints", settings.keep_checkpoints,
                                      rank=self.env.rank, barrier=lambda: D.barrier(self.env),
                                      faults=self.faults)
        self.step = 0
        self.skipped = 0
        self.tokens = 0
        self.last_loss = float("nan")
        self._term = False

    # ------------------------------------------------------------------ public
    def fit(self) -> dict:
        """Train to ``settings.steps`` (resuming when asked); returns the summary dict."""
        opts, env = self.settings, self.env
        t_start = time.perf_counter()
        resumed_from = self._start()
        suffix = "" if env.rank == 0 else f".rank-{env.rank}"
        steps_log = StepLog(self.out_dir / f"steps{suffix}.jsonl")
        metrics = self._open_trackers(resumed_from) if env.is_main else None
        bar = self._progress_bar(resumed_from)
        old_handler = self._install_sigterm()
        window_t, window_tokens = time.perf_counter(), 0
        preempted = False
        evaluation = self.evaluation
        # a stage that early stopping ended before a kill has nothing left to train
        last = self.step if evaluation is not None and evaluation.stopped else opts.steps
        self.model.train()
        try:
            for step in range(self.step + 1, last + 1):
                t_step = time.perf_counter()
                r = self.train_step(step)

                # ---- logs
                steps_log.write(step, r.loss, r.grad_norm, r.skipped, r.keys)
                window_tokens += r.tokens
                lr = self.schedule.current_lr()
                scalars = {"loss": r.loss, "lr": lr, "alpha": r.alpha, "grad_norm": r.grad_norm, **r.metrics}
                if step % opts.log_every == 0 or step == opts.steps:
                    now = time.perf_counter()
                    scalars.update(tokens_per_s=window_tokens / max(now - window_t, 1e-9),
                                   skipped_steps=self.skipped, **self._window_metrics())
                    window_t, window_tokens = now, 0

                # ---- evaluation during training (no training randomness consumed)
                stop = False
                if evaluation is not None and evaluation.due(step):
                    outcome = self._evaluate(step)
                    scalars.update(outcome.scalars)
                    stop = outcome.stop
                if metrics is not None:
                    metrics.write(step, scalars)
                if bar is not None:
                    bar.update(1)
                    tok_s = r.tokens / max(time.perf_counter() - t_step, 1e-9)
                    bar.set_postfix(loss=f"{r.loss:.4f}", lr=f"{lr:.2e}", alpha=f"{r.alpha:.2f}",
                                    tok_s=f"{tok_s:.0f}", refresh=False)

                # ---- checkpoint
                if step % opts.checkpoint_every == 0 or step == opts.steps or self._term or stop:
                    self.save()
                self.faults.after_step(step)
                if self._term:
                    log.warning("%s: SIGTERM received: checkpoint %d committed, stopping (resume to continue)",
                                self.name, step)
                    preempted = True
                    break
                if stop:
                    break
        finally:
            self._restore_sigterm(old_handler)
            steps_log.close()
            if metrics is not None:
                metrics.close()
            if bar is not None:
                bar.close()
        summary = {"stage": self.name, "steps": self.step, "final_loss": self.last_loss,
                   "seconds": round(time.perf_counter() - t_start, 3), "skipped_steps": self.skipped,
                   "tokens": self.tokens, "preempted": preempted, "resumed_from": resumed_from,
                   "counters": self.counters()}
        if evaluation is not None:
            summary["evaluation"] = evaluation.summary()
        if self.parallel == "fsdp":  # the dtype blocks were all-gathered and computed in
            summary["fsdp_param_dtype"] = str(self.fsdp_param_dtype or torch.float32).removeprefix("torch.")
        return summary

    def _open_trackers(self, start_step: int) -> MetricsLog:
        """The stage's trackers (rank 0). Building one may import a tracking library or start its
        background service, which must not draw from the training generators: their states are
        kept across the construction."""
        with preserved_rng(self.data_generator):
            trackers = self.trackers(start_step) if self.trackers is not None else None
        return MetricsLog(self.out_dir / "metrics.jsonl", trackers=trackers)

    def _evaluate(self, step: int):
        """Evaluation after ``step`` (every rank calls it; rank 0 evaluates and broadcasts the
        outcome, so every rank takes the same early-stopping decision). Every random-number state
        and every module's train/eval mode is the same afterwards as before."""
        from conan_core.train.evaluation import EvalOutcome

        outcome, error = None, None
        if self.env.is_main:
            modes = [(module, module.training) for module in self.raw.modules()]
            try:
                with preserved_rng(self.data_generator):
                    outcome = self.evaluation.run(step, self.faults)
            except Exception as exc:  # the other ranks wait for the outcome: tell them, then raise
                error = exc
            finally:
                for module, mode in modes:
                    module.training = mode
        outcome = D.broadcast_object(outcome if error is None else f"{type(error).__name__}: {error}", self.env)
        if error is not None:
            raise error
        if not isinstance(outcome, EvalOutcome):
            raise ConanError(f"{self.name}: rank 0 failed in the evaluation of step {step}: {outcome}")
        if not self.env.is_main:
            self.evaluation.accept(outcome, step)
        return outcome

    def train_step(self, step: int) -> "StepResult":
        """One optimizer step ``step`` (1-based): steps 1-4 of the module docstring.

        Raises :class:`NonFiniteLossError` under policy ``stop``; updates ``self.step``,
        ``self.tokens``, ``self.last_loss`` and the SIGTERM flag (agreed by every rank).
        """
        opts, env = self.settings, self.env
        self.faults.step_start(step)
        self.schedule.apply(step - 1)
        alpha = float(self.alpha_fn(step))

        # ---- forward / backward over the micro-batches
        loss_sum = torch.zeros((), dtype=torch.float64, device=env.device)
        tokens = 0
        keys: list = []
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}  # a metric can occur on some micro-batches only (CoSENT's STS batch)
        for micro in range(1, opts.grad_accum + 1):
            batch = self.stream.next_batch()
            keys.extend(batch.get("keys", []))
            tokens += int(batch.get("tokens", 0))
            batch = move_to(batch, env.device)
            last = micro == opts.grad_accum
            with D.no_sync(self.model, self.parallel, active=not last), self._autocast():
                extra = {"backward_scale": 1.0 / opts.grad_accum} if self.handles_backward else {}
                out = self.model(batch, step=step, alpha=alpha, **extra)
                loss = self.faults.loss(step, out["loss"])
            if not self.handles_backward:
                (loss / opts.grad_accum).backward()
            observe = getattr(self.stream, "observe", None)
            if observe is not None:  # e.g. the miner learns the scores of the negatives it chose
                observe(out.get("observations"))
            loss_sum += loss.detach().double()
            for k, v in out.get("metrics", {}).items():
                sums[k] = sums.get(k, 0.0) + float(v)
                counts[k] = counts.get(k, 0) + 1
            self.faults.after_micro(step, micro)
        if self.handles_backward:
            D.average_gradients(self.raw, env)

        # ---- gradient norm, then one collective for every cross-rank decision
        max_norm = opts.max_grad_norm if opts.max_grad_norm is not None else float("inf")
        grad_norm = _local(torch.nn.utils.clip_grad_norm_(self.params, max_norm, foreach=True))
        local_loss = loss_sum / opts.grad_accum
        bad = (~torch.isfinite(local_loss)) | (~torch.isfinite(grad_norm.double()))
        flags = torch.stack([local_loss, bad.double(),
                             torch.tensor(float(self._term), dtype=torch.float64, device=env.device),
                             torch.tensor(float(tokens), dtype=torch.float64, device=env.device)])
        D.all_reduce_sum(flags, env)
        mean_loss = float(flags[0]) / env.world_size
        any_bad = float(flags[1]) > 0
        self._term = float(flags[2]) > 0
        step_tokens = int(flags[3])
        gnorm = float(grad_norm)

        # ---- the non-finite guard, before the weights can change
        if any_bad:
            self.optimizer.zero_grad(set_to_none=True)
            if opts.nan_policy == "stop":
                raise NonFiniteLossError(self.name, step, float(local_loss), gnorm, keys)
            self.skipped += 1
            log.warning("%s: non-finite loss/grad at step %d (loss=%s, grad_norm=%s): step skipped "
                        "(%d so far); batch keys: %s", self.name, step, float(local_loss), gnorm,
                        self.skipped, keys[:8])
        else:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if not self._weights_finite():
                raise NonFiniteWeightsError(self.name, step, self.nonfinite_parameters())
        self.step = step
        self.tokens += step_tokens
        self.last_loss = mean_loss
        return StepResult(loss=mean_loss, grad_norm=gnorm, skipped=any_bad, keys=keys, tokens=step_tokens,
                          alpha=alpha, metrics={k: v / counts[k] for k, v in sums.items()})

    def _window_metrics(self) -> dict:
        window = getattr(self.stream, "window_metrics", None)
        return dict(window()) if window is not None else {}

    def _weights_finite(self) -> bool:
        """Whether every parameter is finite, agreed by every rank: one fused max-abs per tensor
        (``_foreach_norm`` with ord inf: NaN propagates, and unlike a 2-norm it cannot overflow)."""
        from torch.distributed.tensor import DTensor

        local = [(p.to_local() if isinstance(p, DTensor) else p).detach() for p in self.params]
        local = [t for t in local if t.numel()]
        ok = bool(torch.stack(torch._foreach_norm(local, float("inf"))).isfinite().all()) if local else True
        if self.parallel == "fsdp":  # shards differ between ranks
            flag = torch.tensor([0.0 if ok else 1.0], dtype=torch.float64, device=self.env.device)
            D.all_reduce_sum(flag, self.env)
            ok = float(flag) == 0.0
        return ok

    def nonfinite_parameters(self) -> list[str]:
        """Names of the parameters holding NaN/Inf (this rank's shard under FSDP2)."""
        from torch.distributed.tensor import DTensor

        bad = []
        for name, p in self.raw.named_parameters():
            t = p.to_local() if isinstance(p, DTensor) else p
            if t.numel() and not bool(torch.isfinite(t.detach()).all()):
                bad.append(name)
        return bad

    def counters(self) -> dict:
        out = dict(self.stream.counters())
        out["skipped_steps"] = self.skipped
        return out

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> Path:
        """Commit a checkpoint of the current step (every rank must call it)."""
        env = self.env
        self.ckpt.begin(self.step)
        model_sd = D.full_model_state(self.raw, self.parallel)  # collectives under FSDP2
        optim_sd = D.full_optimizer_state(self.raw, self.optimizer, self.parallel)
        if env.is_main:
            self.ckpt.write_tensors("model.safetensors", model_sd)
            self.ckpt.write_object("optimizer.pt", optim_sd)
            self.ckpt.write_json("trainer.json", {
                "step": self.step, "skipped": self.skipped, "tokens": self.tokens, "last_loss": self.last_loss,
                "schedule": self.schedule.state_dict(), "world": self.world, "stage": self.name,
                "steps": self.settings.steps, "alpha": float(self.alpha_fn(max(self.step, 1))),
                "extra": self.extra,
                "evaluation": self.evaluation.state_dict() if self.evaluation is not None else None})
        self.ckpt.write_object(f"rank-{env.rank:05d}.pt", {
            "rng": capture_rng_state(self.data_generator),
            "stream": self.stream.state_dict()})
        return self.ckpt.commit()

    def _start(self) -> int:
        """Load the newest valid checkpoint (``resume``) or clear the stage's old state; returns its step."""
        opts, env = self.settings, self.env
        if not self.flags.resume:
            if env.is_main:
                shutil.rmtree(self.ckpt.root, ignore_errors=True)
                for name in self._log_files():
                    name.unlink(missing_ok=True)
                if self.evaluation is not None:
                    self.evaluation.rewind(0)
            D.barrier(env)
            return 0
        found, error = None, None
        if env.is_main:
            try:
                hit = self.ckpt.find_latest(fallback=self.flags.fallback_checkpoint)
                found = ("ok", str(hit[0]) if hit else None)
            except ConanError as exc:  # every rank must raise, not only rank 0
                found, error = ("error", str(exc)), exc
        found = D.broadcast_object(found, env)
        if found[0] == "error":
            if error is not None:
                raise error
            raise CheckpointError(found[1])
        if found[1] is None:
            self._rewind_logs(0)
            return 0
        path = Path(found[1])
        self._load(path)
        self._rewind_logs(self.step)
        log.info("%s: resumed from %s (step %d of %d)", self.name, path, self.step, opts.steps)
        return self.step

    def _load(self, path: Path) -> None:
        env = self.env
        # trainer.json since 0.2; trainer.pt (same content) in checkpoints of 0.1
        trainer = (load_json(path / "trainer.json") if (path / "trainer.json").is_file()
                   else load_object(path / "trainer.pt"))
        changed = [(name, trainer["world"].get(name), self.world.get(name)) for name in WORLD_FIELDS
                   if trainer["world"].get(name) != self.world.get(name)]
        if changed and not self.flags.allow_data_change:
            name, old, new = changed[0]
            raise WorldChangedError(self.name, path, name, old, new)
        D.load_model_state(self.raw, load_tensors(path / "model.safetensors"), self.parallel)
        D.load_optimizer_state(self.raw, self.optimizer, load_object(path / "optimizer.pt"), self.parallel)
        self.schedule.load_state_dict(trainer["schedule"])
        self.step = int(trainer["step"])
        self.skipped = int(trainer["skipped"])
        self.tokens = int(trainer["tokens"])
        self.last_loss = float(trainer["last_loss"])
        self.extra = dict(trainer.get("extra", {}))
        if self.evaluation is not None and trainer.get("evaluation") is not None:
            self.evaluation.load_state_dict(trainer["evaluation"])
        rank_file = path / f"rank-{env.rank:05d}.pt"
        if changed:
            log.warning("%s: resuming from %s although %s; the data position restarts (--allow-data-change)",
                        self.name, path, ", ".join(f"{n} changed {o!r} -> {v!r}" for n, o, v in changed))
            if rank_file.is_file():
                restore_rng_state(load_object(rank_file)["rng"], self.data_generator)
            return
        per_rank = load_object(rank_file)
        restore_rng_state(per_rank["rng"], self.data_generator)
        stream_state = per_rank["stream"]
        legacy_miner = (per_rank.get("states") or {}).get("miner")  # checkpoints of 0.1 kept it apart
        if legacy_miner is not None and isinstance(stream_state, dict) and stream_state.get("miner") is None:
            stream_state = {**stream_state, "miner": legacy_miner}
        self.stream.load_state_dict(stream_state)

    def _log_files(self) -> list[Path]:
        return sorted(self.out_dir.glob("steps*.jsonl")) + [self.out_dir / "metrics.jsonl"]

    def _rewind_logs(self, step: int) -> None:
        if self.env.is_main:
            for path in self._log_files():
                truncate_jsonl(path, step)
            if self.evaluation is not None:
                self.evaluation.rewind(step)
        D.barrier(self.env)

    # ------------------------------------------------------------------ helpers
    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.env.device.type, dtype=self.amp_dtype)

    def _progress_bar(self, initial: int):
        if not (self.flags.progress and self.env.is_main):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.settings.steps, initial=initial, desc=self.name, dynamic_ncols=True,
                    leave=True)

    def _install_sigterm(self):
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            # finish the step in flight, commit a checkpoint, then return (exit code 0)
            self._term = True

        return signal.signal(signal.SIGTERM, handler)

    def _restore_sigterm(self, old) -> None:
        if old is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, old)
