"""Webdataset tar shards with a manifest: writing, reading the manifest, checking.

Layout of a shard set (one directory)::

    DIR/manifest.json          {"format", "kind", "count", "fields", "shards": [...]}
    DIR/{prefix}-00000.tar     webdataset tar, one member per sample: "{__key__}.json"
    DIR/{prefix}-00001.tar     ...

Each sample is stored as ONE member ``{key}.json``: a UTF-8 JSON object holding every field of
the sample except ``__key__`` (which is the member name) and other ``__``-prefixed keys. A single
member per sample means a sample can never be half-written, and lists (``neg``) and floats
(``score``) keep their types. Readers also accept hand-made shards with field members
(``key.txt`` + ``key.json`` ...); the manifest's ``fields`` lists the extensions every sample
must have (see :func:`build_manifest`).

Members are written with fixed metadata (mtime 0, uid/gid 0, mode 0644), so the same samples
always give byte-identical shards and the same sha256. Every file is written to a temporary name
in DIR and renamed into place; ``manifest.json`` is written last and is the commit point.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Literal

from conan_core.data.samples import KINDS, DataError, validate_sample
from conan_core.fsio import atomic_write_text, sha256_file

MANIFEST_NAME = "manifest.json"
FORMAT = "conan-shards/1"
#: errors raised while reading a damaged tar (cut short, garbage header, undecodable header ...)
TAR_ERRORS = (tarfile.TarError, EOFError, OSError, ValueError)


@dataclass(frozen=True)
class ShardInfo:
    """One shard: file name (relative to the manifest directory), samples, sha256 hex, size."""

    name: str
    count: int
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Manifest:
    """A shard set: ``kind`` (text | pairs | sts), total ``count``, per-shard :class:`ShardInfo`,
    and ``fields``: the member extensions every sample has (``("json",)`` for written shards).
    ``dir`` is where the manifest was read from (None for a manifest not on disk yet)."""

    kind: str
    count: int
    shards: tuple[ShardInfo, ...]
    fields: tuple[str, ...] = ("json",)
    format: str = FORMAT
    dir: Path | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"format": self.format, "kind": self.kind, "count": self.count,
                "fields": list(self.fields),
                "shards": [{"name": s.name, "count": s.count, "sha256": s.sha256, "bytes": s.bytes}
                           for s in self.shards]}

    @classmethod
    def from_json(cls, data: Any, where: str = "manifest") -> "Manifest":
        """Parse a manifest dict; DataError naming ``where`` and the bad field otherwise."""
        def bad(msg: str) -> DataError:
            return DataError(f"{where}: {msg}; rewrite it with `conan data write-shards` or "
                             "conan_core.data.shards.build_manifest", reason="bad_manifest")
        if not isinstance(data, dict):
            raise bad(f"expected a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise bad(f"format is {data.get('format')!r}, expected {FORMAT!r}")
        if data.get("kind") not in KINDS:
            raise bad(f"kind is {data.get('kind')!r}, valid: {', '.join(KINDS)}")
        shards = []
        for i, s in enumerate(data.get("shards") or []):
            try:
                info = ShardInfo(name=str(s["name"]), count=int(s["count"]), sha256=str(s["sha256"]),
                                 bytes=int(s["bytes"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise bad(f"shards[{i}] is malformed ({type(exc).__name__}: {exc})") from None
            if "/" in info.name or "\\" in info.name or info.name in ("", ".", ".."):
                raise bad(f"shards[{i}].name {info.name!r} must be a plain file name")
            shards.append(info)
        total = sum(s.count for s in shards)
        if data.get("count") != total:
            raise bad(f"count is {data.get('count')!r} but the shards hold {total} samples")
        fields = data.get("fields") or ["json"]
        return cls(kind=data["kind"], count=total, shards=tuple(shards),
                   fields=tuple(str(f) for f in fields))

    def path(self, shard: ShardInfo) -> Path:
        """File path of ``shard`` (relative paths when the manifest has no directory)."""
        return (self.dir / shard.name) if self.dir is not None else Path(shard.name)

    def fingerprint(self) -> str:
        """sha256 over kind, shard names, counts and hashes: equal fingerprints = same data."""
        h = hashlib.sha256(self.kind.encode())
        for s in self.shards:
            h.update(f"\n{s.name}\t{s.count}\t{s.sha256}".encode())
        return h.hexdigest()


file_sha256 = sha256_file  # the name this module's callers know


def read_manifest(directory: str | os.PathLike) -> Manifest:
    """The manifest of the shard set in ``directory`` (DataError if absent or malformed)."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not path.is_file():
        hint = ("; it holds .tar files: create one with conan_core.data.shards.build_manifest"
                if directory.is_dir() and any(directory.glob("*.tar")) else "")
        raise DataError(f"no {MANIFEST_NAME} in {directory}{hint}; write shards with "
                        "`conan data write-shards`", reason="missing_manifest")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})", reason="bad_manifest") from None
    manifest = Manifest.from_json(data, str(path))
    return Manifest(manifest.kind, manifest.count, manifest.shards, manifest.fields, manifest.format,
                    dir=directory)


# ----------------------------------------------------------------------------- tar reading

def split_name(name: str) -> tuple[str, str]:
    """Webdataset convention: ``dir/key.ext.more`` -> (``dir/key``, ``ext.more``)."""
    head, _, base = name.rpartition("/")
    key, dot, ext = base.partition(".")
    return (f"{head}/{key}" if head else key), ext


@dataclass
class TarGroup:
    """The members of one sample. ``next_offset``: byte offset of the header that follows the
    group (where reading resumes), or None when the group is the tar's last one."""

    key: str
    members: dict[str, bytes]
    next_offset: int | None
    repeated: bool = False  # the key appeared earlier in the shard (interleaved or duplicate)


def iter_tar_groups(path: str | os.PathLike, start: int = 0) -> Iterator[TarGroup]:
    """Samples of a webdataset tar, from byte offset ``start`` (a header boundary).

    Consecutive members with the same key form one sample. Raises ``tarfile.ReadError`` (or
    another of ``TAR_ERRORS``) when the tar is cut inside a member or is not a tar; a tar cut at a
    member boundary ends silently, which is why readers compare counts with the manifest.
    ``repeated`` marks a group whose key was already seen since ``start``.
    """
    with open(path, "rb", buffering=1 << 20) as f:
        if start:
            f.seek(start)
        with tarfile.open(fileobj=f, mode="r|") as tar:
            yield from _groups(tar, start)


def _groups(tar: tarfile.TarFile, base: int) -> Iterator[TarGroup]:
    seen: set[str] = set()
    key: str | None = None
    members: dict[str, bytes] = {}
    for info in tar:
        if not info.isfile():
            continue
        k, ext = split_name(info.name)
        if key is not None and k != key:
            yield TarGroup(key, members, base + info.offset, key in seen)
            seen.add(key)
            members = {}
        key = k
        handle = tar.extractfile(info)
        members[ext] = handle.read() if handle is not None else b""
    if key is not None:
        yield TarGroup(key, members, None, key in seen)


# ----------------------------------------------------------------------------- writing

class _HashingWriter(io.RawIOBase):
    """A write-only file wrapper that hashes and counts what goes through."""

    def __init__(self, f: BinaryIO):
        self.f = f
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = bytes(data)
        self.f.write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)


def _check_key(key: Any, index: int) -> str:
    if not isinstance(key, str) or not key or len(key) > 200:
        raise DataError(f"sample #{index}: __key__ must be a non-empty string of at most 200 chars, "
                        f"got {key!r}", reason="bad_key")
    bad = [c for c in key if c in "./\\" or ord(c) < 32]
    if bad or key != key.strip():
        raise DataError(f"sample #{index}: __key__ {key!r} must not contain '.', '/', '\\', control "
                        "characters or surrounding spaces (the webdataset key/extension split)",
                        reason="bad_key", key=key)
    return key


def _atomic_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp-{os.getpid()}")


def _commit(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)


def _add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(payload))


def write_shards(samples: Iterable[dict], out_dir: str | os.PathLike, *,
                 kind: Literal["text", "pairs", "sts"], shard_size: int = 1000, prefix: str = "shard",
                 on_bad_sample: Literal["raise", "skip"] = "raise", skipped: dict[str, int] | None = None) -> Manifest:
    """Write ``samples`` as tar shards ``{prefix}-{i:05d}.tar`` plus ``manifest.json`` in ``out_dir``.

    Each sample is validated against ``kind``'s schema (conan_core.data.samples) without
    truncation; a bad one raises DataError naming its index and key (or, with
    ``on_bad_sample="skip"``, is left out). ``__key__`` defaults to ``s{index:09d}`` (index in
    ``samples``); keys must be unique. ``skipped`` (a dict) counts the left-out samples per reason.
    At most ``shard_size`` samples per shard. Files of an
    earlier manifest in ``out_dir`` that the new one does not list are removed after the new
    manifest is committed. Returns the manifest (with ``dir`` set).
    """
    if kind not in KINDS:
        raise DataError(f"unknown kind {kind!r}; valid: {', '.join(KINDS)}", reason="bad_kind")
    if not isinstance(shard_size, int) or shard_size < 1:
        raise DataError(f"shard_size must be a positive integer, got {shard_size!r}", reason="bad_arg")
    if not prefix or any(c in prefix for c in "./\\"):
        raise DataError(f"prefix {prefix!r} must be non-empty without '.', '/' or '\\'", reason="bad_arg")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    old = _old_shard_names(out)
    shards: list[ShardInfo] = []
    keys: set[str] = set()
    state: dict[str, Any] = {"tar": None}

    def close_shard() -> None:
        if state["tar"] is None:
            return
        state["tar"].close()
        state["file"].flush()
        os.fsync(state["file"].fileno())
        state["file"].close()
        _commit(state["tmp"], state["final"])
        w = state["writer"]
        shards.append(ShardInfo(state["final"].name, state["count"], w.sha.hexdigest(), w.size))
        state["tar"] = None

    try:
        for index, sample in enumerate(samples):
            try:
                clean, _ = validate_sample(sample, kind)
                key = _check_key(sample.get("__key__", f"s{index:09d}"), index)
            except DataError as exc:
                key = sample.get("__key__") if isinstance(sample, dict) else None
                if on_bad_sample == "skip":
                    if skipped is not None:
                        skipped[exc.reason] = skipped.get(exc.reason, 0) + 1
                    continue
                raise DataError(f"sample #{index}: {exc.detail}", reason=exc.reason, key=key) from None
            if key in keys:
                raise DataError(f"sample #{index}: duplicate __key__ {key!r}", reason="bad_key", key=key)
            keys.add(key)
            if state["tar"] is None:
                final = out / f"{prefix}-{len(shards):05d}.tar"
                tmp = _atomic_path(final)
                f = open(tmp, "wb")
                writer = _HashingWriter(f)
                state.update(final=final, tmp=tmp, file=f, writer=writer, count=0,
                             tar=tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT))
            payload = json.dumps({k: v for k, v in clean.items() if not k.startswith("__")},
                                 ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            _add_member(state["tar"], f"{key}.json", payload)
            state["count"] += 1
            if state["count"] >= shard_size:
                close_shard()
        close_shard()
    except BaseException:
        if state["tar"] is not None:
            state["tar"].close()  # flushes into the temporary file, which is removed right after
            state["file"].close()
            state["tmp"].unlink(missing_ok=True)
        raise
    manifest = Manifest(kind=kind, count=sum(s.count for s in shards), shards=tuple(shards), dir=out)
    write_manifest(manifest, out)
    for name in old - {s.name for s in shards}:
        (out / name).unlink(missing_ok=True)
    return manifest


def _old_shard_names(out: Path) -> set[str]:
    try:
        return {s.name for s in read_manifest(out).shards}
    except DataError:
        return set()


def write_manifest(manifest: Manifest, out_dir: str | os.PathLike) -> Path:
    """Write ``manifest`` as ``out_dir/manifest.json`` atomically; returns the path."""
    final = Path(out_dir) / MANIFEST_NAME
    return atomic_write_text(final, json.dumps(manifest.to_json(), indent=1, ensure_ascii=False) + "\n")


def build_manifest(directory: str | os.PathLike, kind: Literal["text", "pairs", "sts"],
                   pattern: str = "*.tar") -> Manifest:
    """Write a manifest for existing webdataset tars in ``directory`` (sorted by name).

    Counts the samples of every tar (a tar that cannot be read fully raises DataError naming it)
    and records the member extensions of the first sample as ``fields``. Use it for shards made
    by other tools; shards written by :func:`write_shards` already have a manifest.
    """
    directory = Path(directory)
    shards = []
    fields: tuple[str, ...] | None = None
    for path in sorted(directory.glob(pattern)):
        count = 0
        try:
            for group in iter_tar_groups(path):
                if fields is None:
                    fields = tuple(sorted(group.members))
                count += 1
        except TAR_ERRORS as exc:
            raise DataError(f"cannot read {path} ({type(exc).__name__}: {exc}); repair or remove it",
                            reason="truncated_shard", url=str(path)) from None
        shards.append(ShardInfo(path.name, count, file_sha256(path), path.stat().st_size))
    manifest = Manifest(kind=kind, count=sum(s.count for s in shards), shards=tuple(shards),
                        fields=fields or ("json",), dir=directory)
    write_manifest(manifest, directory)
    return manifest


# ----------------------------------------------------------------------------- checking

def check_shards(directory: str | os.PathLike, *, max_chars: int | None = None) -> list[str]:
    """Every problem of the shard set in ``directory``, one message per problem (empty = fine).

    Checks, per shard of the manifest: the file exists, its size and sha256 equal the manifest's,
    the tar reads to its end, every sample has the manifest's member extensions, no key repeats,
    the number of samples equals the manifest's (a tar cut at a member boundary reads without
    error, so only this count catches it), and every sample decodes and validates as the readers
    do (a sample they would skip, e.g. invalid UTF-8, is reported with its key). A ``.tar`` file in
    the directory that the manifest does not list is reported too (its samples are never read).
    Each message starts with the file's path.
    """
    try:
        manifest = read_manifest(directory)
    except DataError as exc:
        return [str(exc)]
    problems = []
    required = set(manifest.fields)
    listed = {manifest.path(s).resolve() for s in manifest.shards}
    for stray in sorted(Path(directory).glob("*.tar")):
        if stray.resolve() not in listed:
            problems.append(f"{stray}: a shard file that {MANIFEST_NAME} does not list: its samples are never "
                            "read (re-write the set with `conan data write-shards`, or delete the file)")
    for shard in manifest.shards:
        path = manifest.path(shard)
        if not path.is_file():
            problems.append(f"{path}: missing shard (manifest lists it with {shard.count} samples)")
            continue
        size = path.stat().st_size
        if size != shard.bytes:
            problems.append(f"{path}: size {size} bytes, manifest says {shard.bytes}"
                            + (" (truncated?)" if size < shard.bytes else ""))
        digest = file_sha256(path)
        if digest != shard.sha256:
            problems.append(f"{path}: sha256 mismatch: manifest {shard.sha256}, file {digest}")
        count = 0
        dropped: dict[str, list[str]] = {}
        try:
            for group in iter_tar_groups(path):
                count += 1
                if group.repeated:
                    problems.append(f"{path}: sample key {group.key!r} appears again after other keys "
                                    "(interleaved or duplicate members)")
                missing = required - set(group.members)
                if missing:
                    problems.append(f"{path}: partial sample {group.key!r}: has "
                                    f"{sorted(group.members)}, missing {sorted(missing)}")
                    continue
                reason = _reader_verdict(group.members, manifest.kind, max_chars)
                if reason is not None:
                    dropped.setdefault(reason, []).append(group.key)
        except TAR_ERRORS as exc:
            problems.append(f"{path}: unreadable tar after {count} samples "
                            f"({type(exc).__name__}: {exc}); expected {shard.count} samples")
            continue
        if count != shard.count:
            problems.append(f"{path}: expected {shard.count} samples, got {count}")
        for reason, keys in sorted(dropped.items()):
            shown = ", ".join(repr(k) for k in keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")
            problems.append(f"{path}: {len(keys)} sample(s) the readers would skip as {reason}: {shown}")
    return problems


def _reader_verdict(members: dict[str, bytes], kind: str, max_chars: int | None) -> str | None:
    """The reason a reader (strict decoding, no repair) would drop this sample, or None."""
    from conan_core.data.samples import decode_members

    try:
        raw, _ = decode_members(members)
        validate_sample(raw, kind, max_chars=max_chars)
    except DataError as exc:
        return exc.reason
    return None
