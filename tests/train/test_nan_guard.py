"""Non-finite loss guard (RELIABILITY row 15): caught before ``optimizer.step()``; policy ``stop``
raises naming the step and the batch keys with the weights unchanged, ``skip`` counts the step
and leaves weights and optimizer state exactly as after the previous step."""

from __future__ import annotations

import json

import pytest
import torch

from conan_core.train.checkpoint import load_object, load_tensors
from conan_core.train.loop import NonFiniteLossError
from tests.train.harness import load_job_module

JOB = load_job_module()


def _ckpt(out, step):
    return out / "checkpoints" / f"step-{step:06d}"


@pytest.mark.parametrize("kind", ["nan_loss", "inf_loss"])
def test_stop_policy_raises_before_weights_change(tmp_path, monkeypatch, kind):
    monkeypatch.setenv("CONAN_FAULT", f"{kind}@step=5")
    trainer, _ = JOB.build({"out": str(tmp_path), "steps": 8, "checkpoint_every": 1})
    with pytest.raises(NonFiniteLossError) as err:
        trainer.fit()
    e = err.value
    assert e.step == 5 and "step 5" in str(e)
    assert len(e.keys) == 8 and e.keys[0] == ("shard-001.tar", "s001_0008")  # steps 1-4: 32 samples, 24 a shard
    assert "s001_0008" in str(e)
    after4 = load_tensors(_ckpt(tmp_path, 4) / "model.safetensors")
    for name, value in trainer.raw.state_dict().items():
        assert torch.equal(value, after4[name]), name
    assert all(p.grad is None for p in trainer.params)
    assert not _ckpt(tmp_path, 5).exists()


def test_skip_policy_counts_and_keeps_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("CONAN_FAULT", "nan_loss@step=5")
    trainer, _ = JOB.build({"out": str(tmp_path), "steps": 7, "checkpoint_every": 1, "nan_policy": "skip"})
    summary = trainer.fit()
    assert summary["skipped_steps"] == 1 and summary["steps"] == 7
    w4 = load_tensors(_ckpt(tmp_path, 4) / "model.safetensors")
    w5 = load_tensors(_ckpt(tmp_path, 5) / "model.safetensors")
    w6 = load_tensors(_ckpt(tmp_path, 6) / "model.safetensors")
    assert all(torch.equal(w4[k], w5[k]) for k in w4)
    assert not all(torch.equal(w5[k], w6[k]) for k in w5)
    o4, o5 = load_object(_ckpt(tmp_path, 4) / "optimizer.pt"), load_object(_ckpt(tmp_path, 5) / "optimizer.pt")
    for pid, state in o4["state"].items():
        for name, value in state.items():
            assert torch.equal(value, o5["state"][pid][name]), (pid, name)
    lines = [json.loads(x) for x in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in lines] == [False] * 4 + [True] + [False] * 2
    assert lines[4]["loss"] == "nan"
    metrics = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["skipped_steps"] == 1
