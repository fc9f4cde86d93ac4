"""Atomic writes: a failed write leaves the old file; files and published directories get the
umask's modes (safetensors and tempfile would give 0600)."""

from __future__ import annotations

import os

import pytest

from conan_core.fsio import atomic_write_json, atomic_writer, publish_dir, sha256_file


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "state.json"
    atomic_write_json(path, {"step": 1})
    with pytest.raises(RuntimeError):
        with atomic_writer(path) as fh:
            fh.write(b'{"step": 2')
            raise RuntimeError("disk went away")
    assert path.read_text() == '{\n  "step": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_modes_follow_the_umask(tmp_path):
    old = os.umask(0o002)
    try:
        atomic_write_json(tmp_path / "a.json", [1])
        src = tmp_path / "tmpdir"
        (src / "sub").mkdir(parents=True)
        (src / "sub" / "w.bin").write_bytes(b"x")
        os.chmod(src / "sub" / "w.bin", 0o600)
        os.chmod(src, 0o700)
        publish_dir(src, tmp_path / "final")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o664
    assert (tmp_path / "final" / "sub" / "w.bin").stat().st_mode & 0o777 == 0o664
    assert (tmp_path / "final").stat().st_mode & 0o777 == 0o775


def test_publish_dir_replaces_an_older_directory(tmp_path):
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "old.txt").write_text("old")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "new.txt").write_text("new")
    publish_dir(tmp_path / "new", tmp_path / "final")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]
    assert [p.name for p in (tmp_path / "final").iterdir()] == ["new.txt"]


def test_sha256_file(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert sha256_file(tmp_path / "f") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
