"""RunConfig: presets validate, errors are aggregated with paths, overrides, resolved dumps."""

import pytest
import yaml

from conan_core.config import (
    apply_overrides,
    dump_config,
    load_config,
    parse_override,
    preset_names,
    resolve,
    validate_dict,
)
from conan_core.errors import ConfigError


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_validates(name):
    cfg = load_config(name)
    assert cfg.name


@pytest.mark.parametrize("name", preset_names())
def test_preset_matryoshka_dims_end_at_the_model_width(name):
    """A preset's Matryoshka dims end at its model's hidden size (a wider preset such as
    ``tiny-wide`` must list it, else the full size is trained with a warning and an extra weight)."""
    from conan_core.registries import REGISTRIES

    cfg = load_config(name)
    loss = cfg.supervised.loss
    if loss.get("type") != "matryoshka":
        pytest.skip(f"{name}: supervised loss {loss.get('type')}")
    hidden = REGISTRIES["backbones"].build(cfg.model).to_hf_config(cfg.tokenizer.vocab_size).hidden_size
    assert max(loss["dims"]) == hidden, (name, loss["dims"], hidden)


def test_errors_aggregated_with_paths_and_suggestions():
    raw = {
        "name": "bad",
        "weak": {"steps": -3, "mask": {"type": "soft", "schedule": {"type": "lineer", "total_steps": 0}},
                 "loss": {"type": "info_nce", "temprature": 0.1}},
        "supervised": {"miner": {"type": "dynamic_v3"}},
        "pretrian": {"steps": 10},
    }
    cfg, issues = validate_dict(raw)
    assert cfg is None
    by_path = {i.path: i for i in issues}
    assert "weak.steps" in by_path
    assert "pretrian" in by_path and "pretrain" in by_path["pretrian"].suggestions
    assert "weak.mask.schedule.type" in by_path and "linear" in by_path["weak.mask.schedule.type"].suggestions
    assert "weak.loss.temprature" in by_path and "temperature" in by_path["weak.loss.temprature"].suggestions
    assert "supervised.miner.type" in by_path
    assert "dynamic_v2" in by_path["supervised.miner.type"].suggestions


def test_component_errors_reported_even_when_structure_is_fine():
    _, issues = validate_dict({"weak": {"mask": {"type": "soft", "row_scaling": "sideways"}}})
    assert [i.path for i in issues] == ["weak.mask.row_scaling"]


def test_load_config_raises_with_every_issue(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("weak:\n  loss: {type: infonse}\n  lr: -1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert len(err.value.issues) == 2 and str(path) in str(err.value)
    assert "info_nce" in str(err.value)


@pytest.mark.parametrize("text,expected", [
    ("a.b.c=3", (["a", "b", "c"], 3)),
    ("weak.lr=1e-4", (["weak", "lr"], 1e-4)),
    ("x=[1, 2]", (["x"], [1, 2])),
    ("x={type: cosine}", (["x"], {"type": "cosine"})),
    ("name=hello world", (["name"], "hello world")),
    ("flag=true", (["flag"], True)),
    ("empty=", (["empty"], "")),
])
def test_parse_override(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize("bad", ["novalue", "=3", "a..b=1"])
def test_parse_override_rejects(bad):
    with pytest.raises(ConfigError):
        parse_override(bad)


def test_overrides_applied_and_validated():
    cfg = load_config("tiny", ["weak.mask.schedule.type=cosine", "pretrain.steps=7"])
    assert cfg.weak.mask["schedule"]["type"] == "cosine" and cfg.pretrain.steps == 7
    with pytest.raises(ConfigError, match="weak.mask.schedule.type"):
        load_config("tiny", ["weak.mask.schedule.type=cosin"])
    with pytest.raises(ConfigError):
        apply_overrides({"a": 1}, ["a.b=2"])


def test_resolved_dump_round_trips(tmp_path):
    cfg = load_config("tiny")
    path = dump_config(cfg, tmp_path / "config.yaml")
    raw = yaml.safe_load(path.read_text())
    assert raw["weak"]["mask"]["schedule"]["type"] == "linear"
    assert "temperature" in raw["weak"]["loss"]  # defaults filled in
    again = load_config(path)
    assert resolve(again) == resolve(cfg)
    assert again == load_config(dump_config(again, tmp_path / "again.yaml"))


def test_missing_file_and_unknown_preset(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="did you mean 'tiny'"):
        load_config("tyni")
