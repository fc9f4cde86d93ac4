"""Kill-and-resume exactness (RELIABILITY rows 1, 3, 4, 6, 7): a SIGKILL at any point, then a
resume, ends with weights, optimizer state, RNG draws and steps.jsonl identical to run R."""

from __future__ import annotations

import signal

import pytest

from tests.train.harness import BASE, assert_ok, assert_same_final, run_job


def _killed(proc) -> None:
    assert proc.returncode == -signal.SIGKILL, f"expected SIGKILL, rc={proc.returncode}\n{proc.stderr[-3000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("faults", [
    ["kill@step=8:micro=1"],              # mid gradient accumulation
    ["kill@step=6"],                      # right after a committed checkpoint
    ["kill@step=1"],                      # before any checkpoint: restart from scratch
    ["kill@step=4:micro=2", "kill@step=10"],  # double resume; the second kill after resume 1
], ids=["mid-accumulation", "after-checkpoint", "first-step", "double-resume"])
def test_kill_then_resume_is_exact(tmp_path, reference_run, faults):
    cfg = {**BASE, "out": str(tmp_path)}
    for fault in faults:
        _killed(run_job(cfg, fault))
    summary = assert_ok(run_job(cfg))
    assert summary["steps"] == BASE["steps"]
    assert_same_final(reference_run, tmp_path)
    # byte-identical step log: same losses, grad norms and (url, key) sequence, no dup, no skip
    assert (tmp_path / "steps.jsonl").read_bytes() == (reference_run / "steps.jsonl").read_bytes()


@pytest.mark.slow
def test_kill_inside_checkpoint_save(tmp_path, reference_run):
    cfg = {**BASE, "out": str(tmp_path)}
    _killed(run_job(cfg, "kill_in_save@step=6:after_files=2"))
    ckpts = tmp_path / "checkpoints"
    tmp = ckpts / "step-000006.tmp"
    assert tmp.is_dir() and len(list(tmp.iterdir())) == 2 and not (tmp / "MANIFEST.json").exists()
    assert not (ckpts / "step-000006").exists()
    proc = run_job(cfg)
    summary = assert_ok(proc)
    assert "ignoring uncommitted checkpoint" in proc.stderr and "step-000006.tmp" in proc.stderr
    assert summary["resumed_from"] == 3
    assert not tmp.exists()
    assert_same_final(reference_run, tmp_path)


@pytest.mark.slow
def test_sigterm_commits_and_exits_zero(tmp_path, reference_run):
    cfg = {**BASE, "out": str(tmp_path)}
    proc = run_job(cfg, "sigterm@step=5")
    summary = assert_ok(proc)
    assert summary["preempted"] is True and summary["steps"] == 5
    assert (tmp_path / "checkpoints" / "step-000005" / "MANIFEST.json").is_file()
    summary = assert_ok(run_job(cfg))
    assert summary["resumed_from"] == 5
    assert_same_final(reference_run, tmp_path)


@pytest.mark.slow
def test_hash_seed_does_not_change_results(tmp_path):
    """PYTHONHASHSEED 0 vs 1 give identical step logs (no set-order dependence)."""
    a, b = tmp_path / "a", tmp_path / "b"
    assert_ok(run_job({**BASE, "steps": 4, "out": str(a)}, hashseed="0"))
    assert_ok(run_job({**BASE, "steps": 4, "out": str(b)}, hashseed="1"))
    assert (a / "steps.jsonl").read_bytes() == (b / "steps.jsonl").read_bytes()
    assert_same_final(a, b)
