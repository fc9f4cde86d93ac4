"""`conan export` never destroys data: it refuses an --out that is or contains the run (or the
model), refuses a non-empty foreign directory unless --overwrite (and then keeps its other files),
replaces only a previous export, honours the umask, and refuses non-finite weights (RELIABILITY
notes in the README: "no command destroys data")."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from conan_core.cli import main
from conan_core.export import ExportError, export_run
from conan_core.export.writer import EXPORT_MARKER

from tests import utils as tiny_run


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return tiny_run.build_tiny_run(tmp_path_factory.mktemp("src"))


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_out_equal_to_the_run_is_refused_and_nothing_changes(source, tmp_path, capsys):
    run = tmp_path / "x"
    shutil.copytree(source, run)
    before = _tree(run)
    assert main(["export", str(run), "--out", str(run)]) == ExportError.exit_code
    assert "is " + str(run.resolve()) in capsys.readouterr().err
    assert _tree(run) == before


def test_out_containing_the_run_is_refused(source, tmp_path, capsys):
    parent = tmp_path / "p"
    run = parent / "tiny"
    shutil.copytree(source, run)
    (parent / "unrelated.txt").write_text("keep me")
    before = _tree(parent)
    assert main(["export", str(run), "--out", str(parent)]) != 0
    assert "contains" in capsys.readouterr().err
    assert _tree(parent) == before


def test_out_inside_the_model_directory_is_refused(source, tmp_path):
    final = source / "supervised" / "final"
    with pytest.raises(ExportError, match="is inside"):
        export_run(final, final / "sub")
    assert not (final / "sub").exists()


def test_foreign_directory_needs_overwrite_and_keeps_its_files(source, tmp_path, capsys):
    out = tmp_path / "foreign"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "config.json").write_text("{}")
    assert main(["export", str(source), "--out", str(out)]) == ExportError.exit_code
    assert "--overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "notes.txt"]
    assert main(["export", str(source), "--out", str(out), "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "mine"  # files of other names stay
    assert json.loads((out / "config.json").read_text())["model_type"] == "conan_embedder"
    assert not (out / EXPORT_MARKER).exists()  # a merged directory is never replaced wholesale later
    assert main(["export", str(source), "--out", str(out)]) == ExportError.exit_code


def test_previous_export_is_replaced_and_modes_follow_the_umask(source, tmp_path):
    out = tmp_path / "exp"
    export_run(source, out)
    assert (out / EXPORT_MARKER).is_file()
    (out / "stale-from-last-time.txt").write_text("x")
    old = os.umask(0o027)
    try:
        export_run(source, out)
    finally:
        os.umask(old)
    assert not (out / "stale-from-last-time.txt").exists()  # the export replaced its own directory
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o640  # was 0600 from safetensors
    assert (out / "config.json").stat().st_mode & 0o777 == 0o640
    assert out.stat().st_mode & 0o777 == 0o750
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".exp.")]  # no temp dir left


def test_non_finite_weights_are_refused_by_export_and_encode(source, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    run = tmp_path / "nan"
    shutil.copytree(source, run)
    weights = run / "supervised" / "final" / "model.safetensors"
    state = load_file(str(weights))
    name = next(k for k in state if k.endswith("q_proj.weight"))
    state[name][0, 0] = float("nan")
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    assert main(["export", str(run), "--out", str(tmp_path / "out")]) == 5
    assert "non-finite weights" in capsys.readouterr().err and not (tmp_path / "out").exists()
    texts = tmp_path / "texts.txt"
    texts.write_text("hello\nworld\n")
    assert main(["encode", str(run), "--input", str(texts), "--out", str(tmp_path / "e.npy")]) == 5
    assert name.split("model.", 1)[-1] in capsys.readouterr().err and not (tmp_path / "e.npy").exists()
    assert torch.isnan(load_file(str(weights))[name]).any()  # nothing was "repaired" silently
