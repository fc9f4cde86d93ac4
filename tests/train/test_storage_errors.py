"""A full disk or a read-only run directory ends in a one-paragraph message naming the path and
exit code 4, never a traceback (tmpfs mounts where the machine allows them, as root on Linux)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from conan_core.cli import main
from conan_core.config import dump_config, load_config
from tests.train.harness import run_cli

pytestmark = pytest.mark.slow


def _mount(path: Path, size: str) -> None:
    path.mkdir(parents=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", f"conan-{uuid.uuid4().hex[:8]}", str(path)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip() or res.returncode}); needs root on Linux")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def tiny_fs(tmp_path):
    path = tmp_path / "tiny_fs"
    _mount(path, "96k")
    yield path
    _umount(path)


@pytest.fixture
def read_only_run(trained_run, tmp_path):
    _, run, _ = trained_run
    mnt = tmp_path / "ro"
    _mount(mnt, "256m")
    try:
        shutil.copytree(run, mnt / "run", ignore=shutil.ignore_patterns("checkpoints", "data"))
        dump_config(load_config(run / "config.yaml", [f"data.dir={run / 'data'}"]), mnt / "run" / "config.yaml")
        res = subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot remount read-only: {res.stderr.strip()}")
        yield mnt / "run"
    finally:
        _umount(mnt)


def test_disk_full_during_a_checkpoint_names_the_path(trained_run, tiny_fs):
    _, run, _ = trained_run
    cfg = load_config(run / "config.yaml", [f"data.dir={run / 'data'}", f"tokenizer.path={run / 'tokenizer'}",
                                            "data.demo=false"])
    dump_config(cfg, tiny_fs / "config.yaml")
    proc = run_cli(["pretrain", str(tiny_fs / "config.yaml"), "--run-dir", str(tiny_fs), "--no-progress"])
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert "no space left on device" in proc.stderr and str(tiny_fs) in proc.stderr
    assert "Traceback" not in proc.stderr and "re-run the same command" in proc.stderr
    assert not list(tiny_fs.glob("pretrain/checkpoints/step-*[0-9]"))  # nothing half-written was committed


@pytest.mark.parametrize("command", ["run", "eval", "export"])
def test_read_only_run_directory(read_only_run, command, capsys):
    run = read_only_run
    args = {"run": ["run", str(run / "config.yaml"), "--out", str(run), "--no-progress"],
            "eval": ["eval", str(run)],
            "export": ["export", str(run)]}[command]
    assert main(args) == 4
    err = capsys.readouterr().err
    assert "read-only file system" in err and str(run) in err and "writable" in err
