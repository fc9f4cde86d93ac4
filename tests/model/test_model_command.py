"""`conan model info`: architecture and parameter count from presets, YAML files and names."""

import json

import pytest

from conan_core.cli import main
from conan_core.model.sizes import ARCHITECTURES, parameter_breakdown
from conan_core.registries import REGISTRIES


@pytest.mark.parametrize("flag", [[], ["--architecture"]])
def test_info_on_a_preset_or_architecture_name(capsys, flag):
    assert main(["model", "info", "small", *flag]) == 0
    out = capsys.readouterr().out
    source = "architecture small" if flag else "run config small"
    assert f"source: {source}" in out and "hidden_size: 128" in out
    assert f"parameters: {parameter_breakdown('small')['total']} " in out
    assert "memory per GPU" in out


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_architectures_agree_with_the_presets_of_the_same_name(name):
    """ARCHITECTURES[name] and the preset `name`'s model section describe the same network."""
    from conan_core.config import load_config, preset_names

    if name not in preset_names():
        pytest.skip(f"no preset named {name}")
    cfg = load_config(name)
    backbone = REGISTRIES["backbones"].build(cfg.model)
    hf = backbone.to_hf_config(cfg.tokenizer.vocab_size)
    for field, value in ARCHITECTURES[name].items():
        assert getattr(hf, field) == value, (name, field)


def test_info_on_the_paper_scale_preset_json(capsys):
    assert main(["model", "info", "conan-1.4b", "--json", "--gpus", "8"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["architecture"]["hidden_size"] == 3584
    assert abs(info["parameters"] - 1503e6) / 1503e6 < 0.01
    assert info["memory_plan"]["n_gpus"] == 8 and info["memory_plan"]["zero_stage"] == 1


def test_info_on_a_yaml_file(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("tokenizer: {vocab_size: 300}\nmodel: {type: conan, hidden_size: 32, num_attention_heads: 2,"
                   " num_key_value_heads: 1, head_dim: 16, intermediate_size: 64}\n")
    assert main(["model", "info", str(cfg), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    expected = parameter_breakdown({"vocab_size": 300, "hidden_size": 32, "num_hidden_layers": 2,
                                    "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
                                    "intermediate_size": 64})
    assert info["parameters"] == expected["total"]


def test_info_on_an_hf_backbone(tmp_path, capsys):
    cfg = tmp_path / "hf.yaml"
    cfg.write_text("tokenizer: {vocab_size: 300}\nmodel: {type: hf, model_type: qwen2}\n")
    assert main(["model", "info", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "model_type: qwen2" in out and "parameters: " in out


def test_unknown_target_suggests(capsys):
    assert main(["model", "info", "conan-1.4"]) == 1
    err = capsys.readouterr().err
    assert "did you mean" in err and "conan-1.4b" in err
