"""The trainer's logging and evaluation hooks on the engine job (dropout, python / numpy / torch and
data-generator randomness all feed training there): an evaluation that draws from every generator
and switches the model to eval mode changes no training number; a metric present on some
micro-batches only is averaged over those; every step reaches metrics.jsonl."""

from __future__ import annotations

import json
import random

import numpy as np
import torch

from conan_core.train.evaluation import EvalOutcome
from tests.train.harness import load_job_module

JOB = load_job_module()


class HostileEvaluation:
    """Evaluation during training that misbehaves as a real one could: it draws from python's,
    numpy's, torch's and the data generator's streams and leaves every module in eval mode. The
    trainer must undo all of it (it holds the same interface as StageEvaluation)."""

    def __init__(self, every: int, model: torch.nn.Module, generator: torch.Generator):
        self.every, self.model, self.generator = every, model, generator
        self.calls: list[int] = []
        self.stopped = False

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def run(self, step: int, faults=None) -> EvalOutcome:
        self.calls.append(step)
        value = random.random() + float(np.random.rand()) + float(torch.rand(1)) + \
            float(torch.rand(1, generator=self.generator))
        self.model.eval()
        return EvalOutcome({"eval/probe": value})

    def accept(self, outcome, step):
        self.stopped = outcome.stop

    def state_dict(self) -> dict:
        return {"calls": list(self.calls)}

    def load_state_dict(self, state: dict) -> None:
        self.calls = list(state["calls"])

    def rewind(self, step: int) -> None:
        self.calls = [s for s in self.calls if s <= step]

    def summary(self) -> dict:
        return {"evaluations": len(self.calls)}


def _fit(tmp_path, name, *, evaluate: bool):
    trainer, gen = JOB.build({"out": str(tmp_path / name), "steps": 9, "checkpoint_every": 4, "grad_accum": 2})
    if evaluate:
        trainer.evaluation = HostileEvaluation(3, trainer.raw, gen)
    summary = trainer.fit()
    draws = [random.random(), float(np.random.rand()), torch.rand(2).tolist(), torch.rand(1, generator=gen).tolist()]
    return trainer, summary, draws


def test_a_hostile_evaluation_changes_no_training_number(tmp_path):
    plain, _, plain_draws = _fit(tmp_path, "plain", evaluate=False)
    evaluated, summary, draws = _fit(tmp_path, "eval", evaluate=True)
    assert evaluated.evaluation.calls == [3, 6, 9] and summary["evaluation"] == {"evaluations": 3}
    a, b = plain.raw.state_dict(), evaluated.raw.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert draws == plain_draws  # every generator continues exactly where training left it
    assert all(module.training for module in evaluated.raw.modules())  # dropout stayed on
    rows = [json.loads(x) for x in (tmp_path / "eval" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 10))
    assert [r["step"] for r in rows if "eval/probe" in r] == [3, 6, 9]
    assert (tmp_path / "plain" / "steps.jsonl").read_text() == (tmp_path / "eval" / "steps.jsonl").read_text()


class PartEveryOtherCall(JOB.TinyObjective):
    """Reports ``part`` = 3.0 on every other forward: one micro-batch of each step of two."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, batch, *, step, alpha):
        out = super().forward(batch, step=step, alpha=alpha)
        self.calls += 1
        if self.calls % 2 == 1:
            out["metrics"]["part"] = 3.0
        return out


def test_a_metric_of_some_micro_batches_is_averaged_over_them(tmp_path, monkeypatch):
    monkeypatch.setattr(JOB, "TinyObjective", PartEveryOtherCall)  # the job builds this objective
    _fit(tmp_path, "parts", evaluate=False)
    rows = [json.loads(x) for x in (tmp_path / "parts" / "metrics.jsonl").read_text().splitlines()]
    assert [r["part"] for r in rows] == [3.0] * 9  # not 1.5: it occurred on one micro-batch of two
    assert all(r["alpha_seen"] == r["step"] / 9 for r in rows)
