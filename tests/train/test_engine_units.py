"""Unit checks of the engine's parts: LR schedule shape, RNG capture/restore, fault parsing,
log rewinding and the loop's bookkeeping (tiny module, in process)."""

from __future__ import annotations

import io
import json
import math
import random

import numpy as np
import pytest
import torch

from conan_core.train.faults import FaultInjector, FaultSpecError, parse_faults
from conan_core.train.metrics import truncate_jsonl
from conan_core.train.rng import capture_rng_state, restore_rng_state, seed_everything
from conan_core.train.schedule import WarmupDecay, lr_factor, warmup_steps
from tests.train.harness import load_job_module


@pytest.mark.parametrize("decay", ["cosine", "linear", "constant"])
def test_lr_schedule_shape(decay):
    total, ratio = 100, 0.05
    w = warmup_steps(total, ratio)
    f = [lr_factor(i, total, ratio, decay) for i in range(total)]
    assert w == 5
    assert f[:w] == pytest.approx([(i + 1) / w for i in range(w)])  # linear warm-up, peak on step w
    assert f[w] == pytest.approx(1.0)
    assert all(0 < x <= 1 for x in f)
    tail = f[w:]
    if decay == "constant":
        assert tail == [1.0] * len(tail)
    else:
        assert all(a > b for a, b in zip(tail, tail[1:]))  # strictly decreasing after warm-up
        p = (50 - w) / (total - w)
        expected = 0.5 * (1 + math.cos(math.pi * p)) if decay == "cosine" else 1 - p
        assert f[50] == pytest.approx(expected)


def test_lr_schedule_no_warmup_and_optimizer_groups():
    assert lr_factor(0, 10, 0.0, "linear") == 1.0
    p1, p2 = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([{"params": [p1], "lr": 1.0}, {"params": [p2], "lr": 0.5}])
    sched = WarmupDecay(opt, total=10, warmup_ratio=0.2, decay="cosine")
    sched.apply(0)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.5, 0.25])
    state = sched.state_dict()
    opt.param_groups[0]["lr"] = 123.0  # a resumed optimizer's stale lr never leaks into peaks
    other = WarmupDecay(opt, total=10, warmup_ratio=0.2, decay="cosine")
    other.load_state_dict(state)
    other.apply(1)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1.0, 0.5])


def test_rng_state_roundtrip_through_torch_save():
    gen = seed_everything(7, rank=1)
    state = capture_rng_state(gen)
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)  # plain types only
    first = (random.random(), float(np.random.rand()), torch.rand(3), torch.rand(2, generator=gen))
    seed_everything(99)  # scramble everything
    restore_rng_state(loaded, gen)
    second = (random.random(), float(np.random.rand()), torch.rand(3), torch.rand(2, generator=gen))
    assert first[:2] == second[:2]
    assert torch.equal(first[2], second[2]) and torch.equal(first[3], second[3])


def test_ranks_get_different_streams():
    seed_everything(0, rank=0)
    a = torch.rand(4)
    seed_everything(0, rank=1)
    assert not torch.equal(a, torch.rand(4))


def test_fault_grammar():
    faults = parse_faults("kill@step=7:micro=2, nan_loss@step=5:rank=1,kill_in_save@step=6:after_files=2")
    assert [(f.kind, f.step, f.options) for f in faults] == [
        ("kill", 7, {"micro": 2}), ("nan_loss", 5, {"rank": 1}), ("kill_in_save", 6, {"after_files": 2})]
    assert parse_faults("") == []
    for bad in ("explode@step=1", "kill@stp=1", "kill@micro=2", "kill"):
        with pytest.raises(FaultSpecError):
            parse_faults(bad)
    inj = FaultInjector(faults, rank=0, stage="pretrain")
    loss = torch.tensor(2.0, requires_grad=True)
    assert torch.isfinite(inj.loss(5, loss))  # rank 1 only
    assert torch.isnan(FaultInjector(faults, rank=1).loss(5, loss))
    staged = FaultInjector(parse_faults("inf_loss@step=2:stage=weak"), stage="sft")
    assert torch.isfinite(staged.loss(2, loss))


def test_truncate_jsonl_drops_later_steps_and_torn_lines(tmp_path):
    path = tmp_path / "steps.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, 6)) + '{"step": 6, "lo')
    truncate_jsonl(path, 3)
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2, 3]


def test_fresh_start_clears_old_checkpoints(tmp_path):
    job = load_job_module()
    trainer, _ = job.build({"out": str(tmp_path), "steps": 3, "checkpoint_every": 1})
    trainer.fit()
    assert (tmp_path / "checkpoints" / "step-000003").is_dir()
    trainer, _ = job.build({"out": str(tmp_path), "steps": 2, "checkpoint_every": 5, "resume": False})
    summary = trainer.fit()
    assert summary["resumed_from"] == 0
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000002"]
    assert len((tmp_path / "steps.jsonl").read_text().splitlines()) == 2


def test_resume_at_the_end_runs_nothing(tmp_path):
    job = load_job_module()
    trainer, _ = job.build({"out": str(tmp_path), "steps": 3})
    first = trainer.fit()
    trainer, _ = job.build({"out": str(tmp_path), "steps": 3})
    again = trainer.fit()
    assert again["resumed_from"] == 3 and again["final_loss"] == first["final_loss"]
    assert len((tmp_path / "steps.jsonl").read_text().splitlines()) == 3
