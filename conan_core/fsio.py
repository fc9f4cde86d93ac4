"""Atomic file writes and sha256: the one place the library commits bytes to disk.

Every file a run relies on (configs, DONE markers, metrics, manifests, checkpoints, final models,
exports) is written to a temporary name in the same directory, fsynced, given the permissions the
user's umask asks for, and renamed into place, so a crash leaves either the old file or the new
one, never half of one. Directories are published the same way (:func:`publish_dir`).

Why the explicit ``chmod``: ``tempfile`` and safetensors create files with mode 0600, which made
``model.safetensors`` unreadable to a user's group although every other file honoured the umask.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator

#: how writers that wrap the OS error (torch.save, safetensors, tokenizers) spell the errno
_ERRNO_TEXT = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
               "Read-only file system": errno.EROFS, "Permission denied": errno.EACCES,
               "StorageFull": errno.ENOSPC, "ReadOnlyFilesystem": errno.EROFS,
               "file write failed": errno.EIO}
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def storage_errno(exc: BaseException) -> int | None:
    """The errno of a failed write anywhere in ``exc``'s chain: an ``OSError``'s own, or the one a
    wrapping writer's message spells out (torch and safetensors raise their own types)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen.errno
        code = next((c for marker, c in _ERRNO_TEXT.items() if marker in str(seen)), None)
        if code is not None:
            return code
        seen = seen.__cause__ or seen.__context__
    return None


@contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Re-raise a storage failure inside the block as an ``OSError`` that names ``path`` (writers
    such as safetensors report "No space left on device" without saying where)."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from exc
        raise
    except Exception as exc:
        code = storage_errno(exc)
        if code is None:
            raise
        raise OSError(code, os.strerror(code), str(path)) from exc


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in ``chunk``-byte pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The mode ``open()`` / ``mkdir()`` would give a new file (or directory) under the umask."""
    return (0o777 if directory else 0o666) & ~_umask()


def apply_umask(path: str | os.PathLike) -> None:
    """Give ``path`` (and, for a directory, everything below it) the umask's default modes."""
    path = Path(path)
    if path.is_dir():
        os.chmod(path, default_mode(True))
        for root, dirs, files in os.walk(path):
            for name in dirs:
                os.chmod(os.path.join(root, name), default_mode(True))
            for name in files:
                os.chmod(os.path.join(root, name), default_mode(False))
    else:
        os.chmod(path, default_mode(False))


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a directory (a directory's entry list: makes a rename durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """``with atomic_writer(path) as fh:`` a binary file that appears at ``path`` only when the
    block ends without an exception (temp file in the same directory, fsync, umask mode, rename);
    on an exception the temp file is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, default_mode(False))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_writer`)."""
    with atomic_writer(path) as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any, *, indent: int = 2, sort_keys: bool = False,
                      default: Any = None) -> Path:
    """``data`` as JSON (one trailing newline), written atomically."""
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, default=default, allow_nan=True)
    return atomic_write_text(path, text + "\n")


def publish_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Move the finished directory ``tmp`` to ``final`` (replacing an older ``final``).

    Files get the umask's modes and are fsynced with their directory first. Replacing an existing
    directory takes two renames (old out of the way, new in), so a crash in between leaves the old
    copy under ``final.old`` and no ``final``: callers re-create ``final`` on the next run.
    """
    tmp, final = Path(tmp), Path(final)
    apply_umask(tmp)
    for root, _dirs, files in os.walk(tmp):
        for name in files:
            fsync_path(os.path.join(root, name))
    fsync_path(tmp)
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_path(final.parent)
    shutil.rmtree(old, ignore_errors=True)
    return final
