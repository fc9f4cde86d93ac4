"""Atomic checkpoints: commit protocol, uncommitted directories, corruption at rest (RELIABILITY
rows 4, 5), and resume refusal in a changed world (row 8)."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from conan_core.train.checkpoint import (MANIFEST, CheckpointCorruptError, CheckpointManager, load_object,
                                         load_tensors, verify)
from tests.train.harness import BASE, assert_ok, assert_same_final, run_job


def _save(mgr: CheckpointManager, step: int, value: float):
    mgr.begin(step)
    mgr.write_tensors("model.safetensors", {"w": torch.full((4, 4), value), "tied": torch.ones(2)})
    mgr.write_object("trainer.pt", {"step": step, "rng": (1, [2, 3])})
    return mgr.commit()


def test_commit_writes_manifest_last_and_keeps_k(tmp_path):
    mgr = CheckpointManager(tmp_path, keep=2)
    for step in (3, 6, 9):
        path = _save(mgr, step, float(step))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000006", "step-000009"]
    manifest = verify(path)
    assert set(manifest["files"]) == {"model.safetensors", "trainer.pt"} and manifest["step"] == 9
    assert torch.equal(load_tensors(path / "model.safetensors")["w"], torch.full((4, 4), 9.0))
    assert load_object(path / "trainer.pt")["rng"] == (1, [2, 3])
    found, _ = mgr.find_latest()
    assert found == path


def test_uncommitted_directories_are_ignored_and_logged(tmp_path, caplog):
    mgr = CheckpointManager(tmp_path, keep=5)
    good = _save(mgr, 3, 3.0)
    half = tmp_path / "step-000006.tmp"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"partial")
    no_manifest = tmp_path / "step-000009"
    no_manifest.mkdir()
    (no_manifest / "model.safetensors").write_bytes(b"renamed without manifest")
    with caplog.at_level(logging.WARNING, logger="conan_core.train"):
        found, _ = mgr.find_latest()
    assert found == good
    text = caplog.text
    assert "ignoring uncommitted checkpoint" in text and "step-000006.tmp" in text and "step-000009" in text
    assert not half.exists() and not no_manifest.exists()


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_corruption_names_file_and_hashes(tmp_path, caplog, damage):
    mgr = CheckpointManager(tmp_path, keep=5)
    prev = _save(mgr, 3, 3.0)
    bad = _save(mgr, 6, 6.0)
    target = bad / "model.safetensors"
    expected = json.loads((bad / MANIFEST).read_text())["files"]["model.safetensors"]["sha256"]
    data = bytearray(target.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(bytes(data[:-16]))
    else:
        target.unlink()
    with pytest.raises(CheckpointCorruptError) as err:
        mgr.find_latest()
    msg = str(err.value)
    assert str(target) in msg and expected in msg
    assert err.value.expected == expected and err.value.actual != expected
    with caplog.at_level(logging.WARNING, logger="conan_core.train"):
        found, _ = mgr.find_latest(fallback=True)
    assert found == prev
    assert "WARNING" in caplog.text and str(bad) in caplog.text


@pytest.mark.slow
def test_corrupt_latest_checkpoint_end_to_end(tmp_path, reference_run):
    """Corrupt at rest, resume: non-zero exit naming the file; with fallback, exact result."""
    cfg = {**BASE, "out": str(tmp_path), "keep": 10}
    assert_ok(run_job(cfg, "sigterm@step=8"))  # committed step-000006 and step-000008
    target = tmp_path / "checkpoints" / "step-000008" / "model.safetensors"
    target.write_bytes(target.read_bytes()[:-1024])  # truncated by 1 KiB
    proc = run_job(cfg)
    assert proc.returncode != 0
    assert str(target) in proc.stderr and "sha256" in proc.stderr
    proc = run_job({**cfg, "fallback": True})
    summary = assert_ok(proc)
    assert summary["resumed_from"] == 6
    assert "WARNING" in proc.stderr and "step-000008" in proc.stderr
    assert_same_final(reference_run, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("changed", [{"fingerprint": "other-shards"}, {"num_workers": 2}])
def test_resume_refuses_changed_world(tmp_path, changed):
    cfg = {**BASE, "steps": 6, "out": str(tmp_path)}
    assert_ok(run_job(cfg, "sigterm@step=3"))
    proc = run_job({**cfg, **changed})
    assert proc.returncode != 0
    name = "data_fingerprint" if "fingerprint" in changed else "num_workers"
    assert f"{name} changed" in proc.stderr and "--allow-data-change" in proc.stderr
    summary = assert_ok(run_job({**cfg, **changed, "allow_data_change": True}))
    assert summary["resumed_from"] == 3 and summary["steps"] == 6
