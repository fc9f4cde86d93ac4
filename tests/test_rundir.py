"""The run directory's guards: one writer at a time (the holder is named; a killed holder leaves no
stale lock), the run's own config on every entry point, and run comparison."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conan_core.config import dump_config, load_config
from conan_core.rundir import RunDirMismatch, RunLock, RunLockedError, check_run_dir, compare_runs

HOLD = textwrap.dedent("""
    import sys, time
    from conan_core.rundir import RunLock
    with RunLock(sys.argv[1], command="conan run tiny --out HELD"):
        print("held", flush=True)
        time.sleep(120)
""")


@pytest.fixture
def holder(tmp_path):
    """A process holding ``tmp_path/run``'s lock (killed with SIGKILL at the end)."""
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield run, proc
    proc.kill()
    proc.wait(timeout=30)


def test_second_writer_is_refused_at_once_naming_the_holder(holder):
    run, proc = holder
    with pytest.raises(RunLockedError) as err:
        with RunLock(run):
            pass
    assert f"pid {proc.pid}" in str(err.value) and "conan run tiny --out HELD" in str(err.value)


def test_cli_refuses_a_locked_run_with_its_exit_code(holder, capsys):
    from conan_core.cli import main

    run, proc = holder
    dump_config(load_config("tiny"), run / "config.yaml")
    code = main(["weak", str(run / "config.yaml"), "--run-dir", str(run), "--no-progress"])
    assert code == RunLockedError.exit_code == 6
    assert f"pid {proc.pid}" in capsys.readouterr().err
    assert not (run / "weak").exists()  # nothing was written


def test_a_killed_holder_leaves_no_stale_lock(holder):
    run, proc = holder
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    with RunLock(run):  # the kernel released the flock with the process
        assert json.loads((run / ".conan.lock").read_text())["pid"] == os.getpid()


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    with RunLock(tmp_path / "r"):
        with RunLock(tmp_path / "r"):  # conan run holds it while its stages take it again
            pass
        assert (tmp_path / "r" / ".conan.lock").read_text()  # still held after the inner exit
    assert (tmp_path / "r" / ".conan.lock").read_text() == ""  # released


def test_changed_config_is_refused_naming_the_fields(tmp_path):
    dump_config(load_config("tiny"), tmp_path / "config.yaml")
    check_run_dir(load_config("tiny"), tmp_path)  # same config: fine
    with pytest.raises(RunDirMismatch) as err:
        check_run_dir(load_config("tiny", ["supervised.lr=5e-4", "supervised.steps=80"]), tmp_path)
    steps = load_config("tiny").supervised.steps
    assert "supervised.lr: 0.0002 -> 0.0005" in str(err.value) and f"supervised.steps: {steps} -> 80" in str(err.value)


def test_compare_runs_names_every_difference(tmp_path):
    import torch
    from safetensors.torch import save_file

    a, b = tmp_path / "a", tmp_path / "b"
    for run, value in ((a, 1.0), (b, 1.0)):
        (run / "eval").mkdir(parents=True)
        (run / "eval" / "metrics.json").write_text(json.dumps({"sts": {"spearman": 0.5}}))
        (run / "weak" / "final").mkdir(parents=True)
        save_file({"w": torch.full((2, 2), value)}, str(run / "weak" / "final" / "model.safetensors"))
    assert compare_runs(a, b) == []
    save_file({"w": torch.tensor([[1.0, 1.0], [1.0, 1.0 + 2**-20]])}, str(b / "weak" / "final" / "model.safetensors"))
    (b / "eval" / "metrics.json").write_text(json.dumps({"sts": {"spearman": 0.5000001}}))
    diffs = compare_runs(a, b)
    assert "weak/final/model.safetensors: tensor w differs" in diffs
    assert any(d.startswith("eval/metrics.json sts.spearman") for d in diffs)
