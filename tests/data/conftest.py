"""Shared helpers of the data tests: tiny shard sets written in tmp_path."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from conan_core.data.shards import Manifest, ShardInfo, file_sha256, write_manifest


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A tar with exactly ``members`` (name, payload), in order."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def hand_made_set(directory: Path, kind: str, shards: list[list[tuple[str, bytes]]],
                  fields: tuple[str, ...], counts: list[int] | None = None) -> Manifest:
    """Shards with arbitrary members plus a manifest (counts default: distinct keys per shard)."""
    directory.mkdir(parents=True, exist_ok=True)
    infos = []
    for i, members in enumerate(shards):
        path = write_tar(directory / f"shard-{i:05d}.tar", members)
        keys = []
        for name, _ in members:
            k = name.split(".", 1)[0]
            if not keys or keys[-1] != k:
                keys.append(k)
        n = counts[i] if counts is not None else len(keys)
        infos.append(ShardInfo(path.name, n, file_sha256(path), path.stat().st_size))
    manifest = Manifest(kind=kind, count=sum(s.count for s in infos), shards=tuple(infos), fields=fields,
                        dir=directory)
    write_manifest(manifest, directory)
    return manifest


def jbytes(obj) -> bytes:
    return json.dumps(obj).encode()


def harness_text_set(directory: Path, n_shards: int = 8, per: int = 24) -> Manifest:
    """The reliability harness set: keys s{shard:03d}_{i:04d}, members .txt + .json."""
    shards = []
    for s in range(n_shards):
        members = []
        for i in range(per):
            key = f"s{s:03d}_{i:04d}"
            members.append((f"{key}.txt", f"text of {key} " .encode() * 3))
            members.append((f"{key}.json", jbytes({"source": "harness", "i": i})))
        shards.append(members)
    return hand_made_set(directory, "text", shards, ("json", "txt"))


class Tars:
    """The helpers above, handed to tests by the ``tars`` fixture (import-mode independent)."""

    write_tar = staticmethod(write_tar)
    hand_made_set = staticmethod(hand_made_set)
    harness_text_set = staticmethod(harness_text_set)
    jbytes = staticmethod(jbytes)


@pytest.fixture
def tars() -> type[Tars]:
    return Tars


@pytest.fixture
def harness(tmp_path: Path) -> Path:
    harness_text_set(tmp_path / "harness")
    return tmp_path / "harness"
