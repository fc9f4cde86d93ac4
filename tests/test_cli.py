"""The `conan` command line: list, validate, schema, error output."""

import importlib
import json
import subprocess
import sys

import pytest

from conan_core.cli import COMMAND_MODULES, DATA_COMMAND_MODULES, main
from conan_core.registries import REGISTRIES


def test_every_command_module_is_present():
    for name in COMMAND_MODULES:
        assert hasattr(importlib.import_module(name), "add_commands"), name
    for name in DATA_COMMAND_MODULES:
        assert hasattr(importlib.import_module(name), "add_data_commands"), name


def test_list_shows_every_kind(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for kind in REGISTRIES:
        assert out.count(f"\n{kind}  (") + out.startswith(f"{kind}  (") == 1, kind
    assert "temperature: float = 0.05" in out  # config fields with types and defaults


def test_list_one_kind_json(capsys):
    assert main(["list", "mask_schedules", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["mask_schedules"]
    assert {"linear", "accelerating", "decelerating"} <= {r["key"] for r in rows}


def test_list_unknown_kind(capsys):
    assert main(["list", "maskz"]) == 1
    err = capsys.readouterr().err
    assert "unknown registry kind" in err and "masks" in err and "Traceback" not in err


def test_validate_reports_every_error(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("weak:\n  mask: {type: sfot}\n  pooler: {type: mean, normalise: true}\n")
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "2 config error(s)" in err
    assert "weak.mask.type: unknown masks key (got 'sfot'); did you mean 'soft'?" in err
    assert "weak.pooler.normalise: unknown field" in err and "'normalize'" in err


def test_validate_ok_and_print(capsys):
    assert main(["validate", "tiny", "--print", "--set", "weak.steps=5"]) == 0
    captured = capsys.readouterr()
    assert "valid" in captured.err and "steps: 5" in captured.out


def test_schema(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "weak" in schema["properties"]


def test_errors_have_no_traceback_unless_debug(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    res = subprocess.run([sys.executable, "-m", "conan_core.cli", "validate", missing],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "not found" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([sys.executable, "-m", "conan_core.cli", "--debug", "validate", missing],
                         capture_output=True, text=True, timeout=120)
    assert "Traceback" in res.stderr


@pytest.mark.parametrize("argv", [["--help"], ["list", "--help"], ["validate", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert "usage: conan" in capsys.readouterr().out
