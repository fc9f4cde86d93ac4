"""Deterministic fault injection through the ``CONAN_FAULT`` environment variable.

Grammar: one or more comma-separated faults ``KIND@step=N[:key=value]...``. Steps are 1-based
optimizer steps (checkpoint ``step-000006`` holds the state after step 6). Kinds:

* ``kill@step=N``              SIGKILL right after step N is finished (its log lines and, when N is a
                               checkpoint step, its committed checkpoint included);
  ``kill@step=N:micro=K``      SIGKILL after the backward of micro-batch K (1-based) of step N, i.e.
                               in the middle of gradient accumulation, before the optimizer step;
* ``kill_in_save@step=N:after_files=F``  SIGKILL while writing checkpoint N, after F files of
                               ``step-N.tmp/`` are written (the manifest never is);
* ``kill_in_eval@step=N``      SIGKILL inside the evaluation during training of step N, after the
                               evaluators ran and before anything of it is written;
* ``nan_loss@step=N`` / ``inf_loss@step=N``  the loss of step N becomes NaN / +Inf (every micro-batch);
* ``sigterm@step=N``           SIGTERM to itself when step N starts (the preemption path: step N
                               finishes, a checkpoint is committed, the process exits 0).

Options valid for every kind: ``rank=R`` (only that rank), ``stage=NAME`` (only that stage).
The process kills *itself* at the exact point, so tests need no timing races (Megatron's
RerunErrorInjector idea).
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass, field

import torch

ENV = "CONAN_FAULT"
KINDS = ("kill", "kill_in_save", "kill_in_eval", "nan_loss", "inf_loss", "sigterm")
_OPTIONS = {"step", "micro", "after_files", "rank", "stage"}


class FaultSpecError(ValueError):
    """``CONAN_FAULT`` could not be parsed; the message shows the grammar."""


@dataclass(frozen=True)
class Fault:
    kind: str
    step: int
    options: dict = field(default_factory=dict)

    def applies(self, rank: int, stage: str | None) -> bool:
        if "rank" in self.options and int(self.options["rank"]) != rank:
            return False
        if "stage" in self.options and self.options["stage"] != stage:
            return False
        return True


def parse_faults(text: str) -> list[Fault]:
    """Parse a ``CONAN_FAULT`` value (see the module docstring); empty text gives ``[]``."""
    faults = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        kind, at, rest = part.partition("@")
        if kind not in KINDS or not at:
            raise FaultSpecError(f"{ENV}: bad fault {part!r}: expected KIND@step=N[:key=value], "
                                 f"KIND one of {', '.join(KINDS)}")
        options: dict = {}
        for item in rest.split(":"):
            key, eq, value = item.partition("=")
            if not eq or key not in _OPTIONS:
                raise FaultSpecError(f"{ENV}: bad option {item!r} in {part!r}; valid: {sorted(_OPTIONS)}")
            options[key] = value if key == "stage" else int(value)
        if "step" not in options:
            raise FaultSpecError(f"{ENV}: {part!r} needs step=N")
        faults.append(Fault(kind, int(options.pop("step")), options))
    return faults


def _die(reason: str) -> None:
    # the message goes out first so a test can see where the process died
    print(f"[conan fault] {reason}: SIGKILL", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class FaultInjector:
    """The faults of this process (rank, stage), queried by the trainer at fixed points."""

    def __init__(self, faults: list[Fault], rank: int = 0, stage: str | None = None):
        self.faults = [f for f in faults if f.applies(rank, stage)]

    @classmethod
    def from_env(cls, rank: int = 0, stage: str | None = None) -> "FaultInjector":
        return cls(parse_faults(os.environ.get(ENV, "")), rank, stage)

    def _find(self, kind: str, step: int) -> Fault | None:
        return next((f for f in self.faults if f.kind == kind and f.step == step), None)

    def step_start(self, step: int) -> None:
        """Called before the first micro-batch of ``step``."""
        if self._find("sigterm", step) is not None:
            os.kill(os.getpid(), signal.SIGTERM)

    def loss(self, step: int, loss: torch.Tensor) -> torch.Tensor:
        """The loss to use at ``step``: unchanged, or NaN / Inf (keeping the autograd graph)."""
        if self._find("nan_loss", step) is not None:
            return loss * float("nan")
        if self._find("inf_loss", step) is not None:
            return loss * float("inf")
        return loss

    def after_micro(self, step: int, micro: int) -> None:
        """Called after the backward of 1-based micro-batch ``micro`` of ``step``."""
        f = self._find("kill", step)
        if f is not None and f.options.get("micro") == micro:
            _die(f"kill at step {step} micro-batch {micro}")

    def after_step(self, step: int) -> None:
        """Called when ``step`` is completely done (logged, checkpointed if due)."""
        f = self._find("kill", step)
        if f is not None and "micro" not in f.options:
            _die(f"kill after step {step}")

    def in_eval(self, step: int) -> None:
        """Called by evaluation during training of ``step`` once the evaluators have run."""
        if self._find("kill_in_eval", step) is not None:
            _die(f"kill during the evaluation of step {step}")

    def in_save(self, step: int, files_written: int) -> None:
        """Called by the checkpoint writer after each file of checkpoint ``step``."""
        f = self._find("kill_in_save", step)
        if f is not None and files_written >= int(f.options.get("after_files", 1)):
            _die(f"kill while saving checkpoint {step} after {files_written} file(s)")
