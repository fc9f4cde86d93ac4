"""``conan mask show | plot`` through a parser built with ``add_commands``."""

from __future__ import annotations

import argparse

import pytest

from conan_core.commands.mask import add_commands
from conan_core.errors import ConanError


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="conan")
    add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def run(argv: list[str]) -> int:
    args = parse(argv)
    return args.func(args)


def matrix_lines(text: str) -> list[list[float]]:
    return [[float(x) for x in line.split()] for line in text.strip().splitlines()[1:]]


def test_show_prints_alpha_and_the_soft_matrix(capsys):
    assert run(["mask", "show", "--step", "25", "--total", "100", "--length", "4"]) == 0
    out = capsys.readouterr().out
    assert "alpha=0.2500" in out.splitlines()[0]
    rows = matrix_lines(out)
    assert rows == [[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.5, 0.5], [1.0, 1.0, 1.0, 0.3333], [1.0, 1.0, 1.0, 1.0]]
    assert "0.3333" in out  # 4 decimals


def test_show_options(capsys):
    assert run(["mask", "show", "--alpha", "0.5", "--length", "4", "--row-scaling", "i_over_l"]) == 0
    assert matrix_lines(capsys.readouterr().out)[0] == [1.0, 0.125, 0.125, 0.125]
    assert run(["mask", "show", "--mask", "causal", "--length", "3", "--seq-len", "4"]) == 0
    assert matrix_lines(capsys.readouterr().out) == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]]
    assert run(["mask", "show", "--mask", "document", "--length", "4", "--segments", "2,2"]) == 0
    assert matrix_lines(capsys.readouterr().out) == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]
    assert run(["mask", "show", "--schedule", "step", "--step", "60", "--total", "100", "--length", "2"]) == 0
    assert "alpha=1.0000" in capsys.readouterr().out


def test_show_errors():
    with pytest.raises(ConanError, match="seq-len"):
        run(["mask", "show", "--length", "5", "--seq-len", "3"])
    with pytest.raises(ConanError, match="segments"):
        run(["mask", "show", "--mask", "document", "--length", "5", "--segments", "2,2"])
    with pytest.raises(ConanError, match="soft"):
        run(["mask", "show", "--mask", "sfot"])
    with pytest.raises(SystemExit):
        parse(["mask", "show", "--row-scaling", "bad"])
    with pytest.raises(SystemExit):
        parse(["mask"])


def test_plot_writes_a_png(tmp_path, capsys):
    out = tmp_path / "mask.png"
    assert run(["mask", "plot", "--total", "20", "--length", "6", "--steps", "0,10,20",
                "--schedule", "cosine", "--out", str(out)]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    assert str(out) in capsys.readouterr().out
