"""Atomic, verified checkpoints (docs/RUNDIR.md ``<stage>/checkpoints/step-NNNNNN``).

Commit protocol (a crash at any point leaves either the previous state or a new committed one):

1. every file is written into ``step-NNNNNN.tmp/`` and fsynced (each rank writes its own
   ``rank-RRRRR.pt``; rank 0 writes the shared files);
2. all ranks meet at a barrier; rank 0 hashes every file (sha256) and writes ``MANIFEST.json``
   **last**, fsyncs it and the directory;
3. rank 0 renames ``step-NNNNNN.tmp`` → ``step-NNNNNN`` and fsyncs the parent; old committed
   checkpoints beyond ``keep`` are deleted.

Loading scans committed directories newest first. A directory without ``MANIFEST.json`` (or any
``*.tmp``) is never loaded: it is logged as ``ignoring uncommitted checkpoint ...`` and removed. A
committed checkpoint whose files do not match the manifest raises :class:`CheckpointCorruptError`
naming the file with expected and actual sha256; with ``fallback=True`` a WARNING names it and the
previous valid checkpoint is used instead. Several ranks need a shared filesystem for the directory.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch

from conan_core.errors import ConanError
from conan_core.fsio import apply_umask, fsync_path, sha256_file, writing

log = logging.getLogger("conan_core.train")

MANIFEST = "MANIFEST.json"
FORMAT_VERSION = 1
_STEP_RE = re.compile(r"^step-(\d{6,})$")
_TMP_RE = re.compile(r"^step-(\d{6,})\.tmp$")


class CheckpointError(ConanError):
    """A checkpoint could not be loaded or written."""


class CheckpointCorruptError(CheckpointError):
    """A committed checkpoint's file does not match its manifest (``path``, ``expected``, ``actual``)."""

    def __init__(self, path: Path, expected: str, actual: str):
        self.path, self.expected, self.actual = Path(path), expected, actual
        super().__init__(
            f"checkpoint file {path} is corrupt: sha256 expected {expected}, actual {actual}. "
            "Delete this checkpoint directory to resume from the previous one, or resume with "
            "checkpoint fallback enabled (--fallback-checkpoint) to do it automatically.")


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


def _noop() -> None:
    return None


def verify(path: Path) -> dict:
    """The manifest of committed checkpoint ``path`` after checking every file's sha256.

    Raises :class:`CheckpointError` when the manifest is missing or unreadable, and
    :class:`CheckpointCorruptError` for the first file that is missing or differs.
    """
    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise CheckpointError(f"{path} has no {MANIFEST}: it was never committed")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointCorruptError(mpath, "a valid JSON manifest", f"unreadable ({exc})") from None
    for name, meta in sorted(files.items()):
        fpath = path / name
        if not fpath.is_file():
            raise CheckpointCorruptError(fpath, meta["sha256"], "missing file")
        actual = sha256_file(fpath)
        if actual != meta["sha256"]:
            raise CheckpointCorruptError(fpath, meta["sha256"], actual)
    return manifest


class CheckpointManager:
    """Writes and finds checkpoints under ``root`` (``<run>/<stage>/checkpoints``).

    ``barrier`` synchronises ranks (a no-op in one process); ``faults`` (a FaultInjector or None)
    is told after each file written so tests can kill the process mid-save.
    """

    def __init__(self, root: Path, keep: int, *, rank: int = 0, barrier: Callable[[], None] = _noop,
                 faults: Any = None):
        self.root = Path(root)
        self.keep = int(keep)
        self.rank = rank
        self.barrier = barrier
        self.faults = faults
        self._tmp: Path | None = None
        self._step = -1
        self._written = 0

    # ------------------------------------------------------------------ writing
    def begin(self, step: int) -> Path:
        """Create ``step-NNNNNN.tmp/`` (fresh) and return it; every rank must call it."""
        tmp = self.root / (step_dir_name(step) + ".tmp")
        if self.rank == 0:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        self.barrier()
        self._tmp, self._step, self._written = tmp, step, 0
        return tmp

    def _after_file(self, path: Path) -> None:
        self._written += 1
        if self.faults is not None:
            self.faults.in_save(self._step, self._written)

    def write_tensors(self, name: str, tensors: dict[str, torch.Tensor]) -> Path:
        """Write a flat tensor dict as safetensors (CPU, contiguous copies: no shared storage)."""
        from safetensors.torch import save_file

        assert self._tmp is not None, "begin() first"
        path = self._tmp / name
        # clone breaks storage sharing (tied embeddings), which safetensors refuses
        with writing(path):
            save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}, str(path))
        apply_umask(path)  # safetensors creates 0600 files
        fsync_path(path)
        self._after_file(path)
        return path

    def write_json(self, name: str, obj: Any) -> Path:
        """Write plain (JSON-able) state and fsync it."""
        assert self._tmp is not None, "begin() first"
        path = self._tmp / name
        with writing(path), open(path, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=1, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._after_file(path)
        return path

    def write_object(self, name: str, obj: Any) -> Path:
        """Write tensors and plain containers (what ``torch.load(weights_only=True)`` reads back)
        with ``torch.save`` and fsync it."""
        assert self._tmp is not None, "begin() first"
        path = self._tmp / name
        with writing(path), open(path, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        self._after_file(path)
        return path

    def commit(self) -> Path:
        """Manifest last, then the atomic rename; every rank must call it. Returns the final path."""
        assert self._tmp is not None, "begin() first"
        tmp, step = self._tmp, self._step
        final = self.root / step_dir_name(step)
        self.barrier()  # every rank's files are on disk
        if self.rank == 0:
            files = {}
            for fpath in sorted(tmp.iterdir()):
                if fpath.is_file():
                    files[fpath.name] = {"sha256": sha256_file(fpath), "bytes": fpath.stat().st_size}
            manifest = {"format": FORMAT_VERSION, "step": step, "created": time.time(), "files": files}
            mpath = tmp / MANIFEST
            with open(mpath, "w", encoding="utf-8") as fh:
                json.dump(manifest, fh, indent=1, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            fsync_path(tmp)
            if final.exists():  # a stale copy from before a resume to an earlier step
                shutil.rmtree(final)
            os.replace(tmp, final)
            fsync_path(self.root)
            self._prune()
        self.barrier()
        self._tmp = None
        return final

    def _prune(self) -> None:
        committed = sorted(self.committed_steps())
        for step in committed[:-self.keep] if self.keep > 0 else []:
            shutil.rmtree(self.root / step_dir_name(step), ignore_errors=True)

    # ------------------------------------------------------------------ finding
    def committed_steps(self) -> list[int]:
        """Steps of directories named ``step-NNNNNN`` (committed or not), ascending."""
        if not self.root.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.root.iterdir() if (m := _STEP_RE.match(p.name)))

    def find_latest(self, *, fallback: bool = False, cleanup: bool = True) -> tuple[Path, dict] | None:
        """The newest valid committed checkpoint as ``(path, manifest)``, or None when there is none.

        Uncommitted directories are logged (``ignoring uncommitted checkpoint <path>``) and, with
        ``cleanup`` on rank 0, deleted. See the module docstring for corrupt ones.
        """
        if not self.root.is_dir():
            return None
        for p in sorted(self.root.iterdir()):
            if _TMP_RE.match(p.name):
                log.warning("ignoring uncommitted checkpoint %s", p)
                if cleanup and self.rank == 0:
                    shutil.rmtree(p, ignore_errors=True)
        for step in reversed(self.committed_steps()):
            path = self.root / step_dir_name(step)
            if not (path / MANIFEST).is_file():
                log.warning("ignoring uncommitted checkpoint %s (no %s)", path, MANIFEST)
                if cleanup and self.rank == 0:
                    shutil.rmtree(path, ignore_errors=True)
                continue
            try:
                return path, verify(path)
            except CheckpointCorruptError as exc:
                if not fallback:
                    raise
                log.warning("WARNING: skipping corrupt checkpoint %s (%s); falling back to the previous one",
                            path, exc)
        return None


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint file holds something other than tensors and plain containers."""

    exit_code = 7


def load_object(path: Path) -> Any:
    """Load a ``torch.save`` file of a checkpoint with ``weights_only=True``.

    Only tensors and plain containers (dict, list, tuple, str, int, float, bool, None) load: a
    pickle that would construct any other object, i.e. run code, is refused with
    :class:`UnsafeCheckpointError`. The manifest's sha256 detects damage, not tampering (whoever can
    write the file can write the manifest), so it is no reason to trust a pickle.
    """
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsafeCheckpointError(
            f"refusing to load checkpoint file {path}: it is not a plain tensor/state file that "
            f"torch.load(weights_only=True) accepts ({first}). conan_core never writes such files; "
            "if you did not put it there, treat the run directory as untrusted and delete this "
            "checkpoint directory to resume from the previous one.") from None


def load_json(path: Path) -> Any:
    """Plain state of a checkpoint (``trainer.json``)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint file {path} is unreadable ({exc}); delete this checkpoint "
                              "directory to resume from the previous one") from None


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")
