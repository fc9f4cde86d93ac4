"""The run directory's guards: one writer at a time, one config per run, and run comparison.

* :class:`RunLock` takes an exclusive ``fcntl.flock`` on ``RUN/.conan.lock`` for every command
  that writes a run (``conan run``, the per-stage commands, ``conan eval``, ``conan export`` into
  the run). A second writer is refused at once with the holder's pid and command line. The lock is
  re-entrant within a process (``conan run`` holds it while its stages take it again) and is
  released by the kernel when the process dies, so a SIGKILLed run never leaves a stale lock.
* :func:`check_run_dir` refuses a config that differs from the run's ``config.yaml``; every entry
  point that trains runs it (``conan run`` and ``conan pretrain|sft|weak|supervised``).
* :func:`compare_runs` reports every difference between two runs' metrics and weights (``conan
  compare A B``): a refactoring that must not change behaviour is checked with it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from conan_core.errors import ConanError

LOCK_NAME = ".conan.lock"


class RunLockedError(ConanError):
    """Another process is writing the run directory."""

    exit_code = 6


class RunDirMismatch(ConanError):
    """The run directory holds a run with a different config."""

    exit_code = 2


_HELD: dict[str, list] = {}  # resolved lock path -> [fd, depth]


def current_command() -> str:
    """The command line of this process, as a shell would re-run it."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("conan", "cli.py"):
        argv[0] = "conan"
    return shlex.join(argv)


class RunLock:
    """``with RunLock(run_dir):`` holds the run's exclusive lock (see the module docstring).

    Raises :class:`RunLockedError` naming the holder when another process has it, and lets an
    ``OSError`` through when the directory cannot be written (the CLI names the path).
    """

    def __init__(self, run_dir: str | os.PathLike, command: str | None = None):
        self.run_dir = Path(run_dir)
        self.command = command or current_command()
        self.path = self.run_dir / LOCK_NAME

    def __enter__(self) -> "RunLock":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        key = str(self.path.resolve())
        if key in _HELD:
            _HELD[key][1] += 1
            self._key = key
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLockedError(
                f"{self.run_dir} is being written by another process (pid {holder.get('pid', '?')}, "
                f"since {holder.get('started', '?')}: {holder.get('command', '?')}). Wait for it to finish "
                "or stop it; two writers would leave the run inconsistent. Use another --out for a "
                "second run.") from None
        os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "command": self.command,
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.write(fd, (json.dumps(info) + "\n").encode("utf-8"))
        os.fsync(fd)
        self._key = key
        _HELD[key] = [fd, 1]
        return self

    def __exit__(self, *exc: Any) -> None:
        entry = _HELD.get(self._key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del _HELD[self._key]
            fd = entry[0]
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass  # a read-only or full disk must not hide the real error being raised
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _read_holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 4096).decode("utf-8", "replace").strip()
        return json.loads(data) if data else {}
    except (OSError, ValueError):
        return {}


def is_locked_here(run_dir: str | os.PathLike) -> bool:
    """Whether this process holds ``run_dir``'s lock."""
    path = Path(run_dir) / LOCK_NAME
    return path.exists() and str(path.resolve()) in _HELD


# ----------------------------------------------------------------------------- config check

def check_run_dir(cfg: Any, run_dir: str | os.PathLike) -> None:
    """Refuse to continue a run directory whose ``config.yaml`` differs from ``cfg`` (names the
    changed fields, old -> new). Nothing to check when the directory holds no config yet."""
    import yaml

    from conan_core.config import resolve

    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        return
    try:
        old = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise RunDirMismatch(f"{path} is unreadable ({exc}); the run directory is damaged: use a new --out") from None
    new = json.loads(json.dumps(resolve(cfg)))
    diffs = list(_diff(old, new, ""))
    if diffs:
        shown = "; ".join(f"{p}: {a!r} -> {b!r}" for p, a, b in diffs[:8])
        more = f" (+{len(diffs) - 8} more)" if len(diffs) > 8 else ""
        raise RunDirMismatch(
            f"{run_dir} holds a run with another config ({shown}{more}). Resume it with the config it was "
            f"started with (`--set` the old values or pass {path}), use a new --out directory, or delete "
            "the old one to start over.")


def _diff(a: Any, b: Any, path: str):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            yield from _diff(a.get(key), b.get(key), f"{path}.{key}" if path else key)
    elif a != b:
        yield path, a, b


# ----------------------------------------------------------------------------- comparison

COMPARED_WEIGHTS = ("pretrain/final/model.safetensors", "sft/final/model.safetensors",
                    "weak/final/model.safetensors", "supervised/final/model.safetensors",
                    "export/model.safetensors")
COMPARED_FILES = ("mine/pool.jsonl", "weak/teacher.json")


def compare_runs(a: str | os.PathLike, b: str | os.PathLike) -> list[str]:
    """Every difference between runs ``a`` and ``b``: ``eval/metrics.json`` (values), the weights
    of each stage's ``final/`` and of the export (``torch.equal`` per tensor), the mined pool and
    the teacher filter (bytes). Files absent from both runs are skipped; an empty list means equal."""
    from safetensors.torch import load_file

    a, b = Path(a), Path(b)
    out: list[str] = []
    ma, mb = a / "eval" / "metrics.json", b / "eval" / "metrics.json"
    if ma.is_file() or mb.is_file():
        if not (ma.is_file() and mb.is_file()):
            out.append("eval/metrics.json exists in only one run")
        else:
            va, vb = json.loads(ma.read_text()), json.loads(mb.read_text())
            out.extend(f"eval/metrics.json {p}: {x!r} != {y!r}" for p, x, y in _diff(va, vb, ""))
    for rel in COMPARED_WEIGHTS:
        fa, fb = a / rel, b / rel
        if not fa.is_file() and not fb.is_file():
            continue
        if not (fa.is_file() and fb.is_file()):
            out.append(f"{rel} exists in only one run")
            continue
        ta, tb = load_file(str(fa)), load_file(str(fb))
        if set(ta) != set(tb):
            out.append(f"{rel}: tensor names differ ({sorted(set(ta) ^ set(tb))[:4]})")
            continue
        for name in sorted(ta):
            if ta[name].dtype != tb[name].dtype or ta[name].shape != tb[name].shape or not ta[name].equal(tb[name]):
                out.append(f"{rel}: tensor {name} differs")
    for rel in COMPARED_FILES:
        fa, fb = a / rel, b / rel
        if fa.is_file() != fb.is_file():
            out.append(f"{rel} exists in only one run")
        elif fa.is_file() and fa.read_bytes() != fb.read_bytes():
            out.append(f"{rel} differs")
    return out
