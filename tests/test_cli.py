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
    assert main(["list", "maskz"]) == 2
    err = capsys.readouterr().err
    assert "unknown registry kind" in err and "masks" in err and "Traceback" not in err


def test_validate_reports_every_error(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("weak:\n  mask: {type: sfot}\n  pooler: {type: mean, normalise: true}\n")
    assert main(["validate", str(path)]) == 2
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
    assert res.returncode == 2 and "not found" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([sys.executable, "-m", "conan_core.cli", "--debug", "validate", missing],
                         capture_output=True, text=True, timeout=120)
    assert "Traceback" in res.stderr


@pytest.mark.parametrize("argv", [["--help"], ["list", "--help"], ["validate", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert "usage: conan" in capsys.readouterr().out


def test_yaml_with_invalid_bytes_names_the_file(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "not UTF-8" in err and "offset 9" in err and "Traceback" not in err


def test_yaml_that_extends_itself_is_a_cycle_error(tmp_path, capsys):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(f"extends: {b}\nname: a\n")
    b.write_text(f"extends: {a}\nname: b\n")
    assert main(["validate", str(a)]) == 2
    assert "extends itself in a cycle" in capsys.readouterr().err
    a.write_text(f"extends: {a}\n")
    assert main(["validate", str(a)]) == 2


def test_validation_catches_what_used_to_fail_after_the_run_started(capsys):
    assert main(["validate", "tiny", "--set", "model.type=hf", "--set", "model.model_type=nosuchmodel"]) == 2
    assert "model.model_type" in capsys.readouterr().err
    assert main(["validate", "tiny", "--set", "weak.steps=0"]) == 2
    assert "weak.steps" in capsys.readouterr().err
    assert main(["validate", "tiny", "--set", "weak.steps=0", "--set", "weak.enabled=false"]) == 0


def test_help_lists_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "exit codes:" in out and " 75  preempted" in out and "  4  storage" in out
