"""Architecture presets, parameter counts (conan-1.4b on the meta device) and the memory plan."""

import pytest
import torch

from conan_core.errors import ConanError
from conan_core.model import ARCHITECTURES, ConanConfig, ConanForCausalLM, count_parameters, memory_plan
from conan_core.model.sizes import format_bytes, parameter_breakdown

PAPER_PARAMETERS = 1503e6  # RECIPE.md §1: embedding 537.6M + 8 blocks ~962M, no LM head


def test_conan_1_4b_matches_the_paper_table():
    arch = ARCHITECTURES["conan-1.4b"]
    assert (arch["num_hidden_layers"], arch["hidden_size"], arch["num_attention_heads"],
            arch["num_key_value_heads"], arch["head_dim"], arch["intermediate_size"], arch["vocab_size"],
            arch["max_position_embeddings"], arch["tie_word_embeddings"]) == \
        (8, 3584, 32, 8, 112, 8192, 150000, 32768, False)


def test_conan_1_4b_on_meta_device_counts_1503m():
    with torch.device("meta"):
        model = ConanForCausalLM(ConanConfig(**ARCHITECTURES["conan-1.4b"]))
    assert next(model.parameters()).device.type == "meta"
    n = count_parameters(model, exclude_lm_head=True)
    assert abs(n - PAPER_PARAMETERS) / PAPER_PARAMETERS < 0.01, n
    breakdown = parameter_breakdown("conan-1.4b")
    assert n == breakdown["total"]
    assert breakdown["embedding"] == 537_600_000
    assert abs(breakdown["blocks"] - 962e6) / 962e6 < 0.01
    assert count_parameters(model, exclude_lm_head=False) == breakdown["total_with_lm_head"] == n + 537_600_000


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_closed_form_equals_a_real_count(name):
    arch = ARCHITECTURES[name]
    with torch.device("meta"):
        model = ConanForCausalLM(ConanConfig(**arch))
    assert count_parameters(model) == parameter_breakdown(name)["total"]
    assert count_parameters(model, exclude_lm_head=False) == parameter_breakdown(name)["total_with_lm_head"]


def test_conan_config_defaults_are_tiny():
    config = ConanConfig()
    for field, value in ARCHITECTURES["tiny"].items():
        assert getattr(config, field) == value, field


def test_tied_head_is_counted_once():
    arch = {**ARCHITECTURES["tiny"], "tie_word_embeddings": True}
    model = ConanForCausalLM(ConanConfig(**arch))
    n = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert count_parameters(model) == count_parameters(model, exclude_lm_head=False) == n
    assert parameter_breakdown(arch)["lm_head"] == 0


def test_memory_plan_zero_stages():
    params = parameter_breakdown("conan-1.4b")["total_with_lm_head"]
    ddp = memory_plan("conan-1.4b", 8, zero_stage=0, dtype="bf16")
    z1 = memory_plan("conan-1.4b", 8, zero_stage=1, dtype="bf16")
    z3 = memory_plan("conan-1.4b", 8, zero_stage=3, dtype="bf16")
    assert ddp["parameters"] == params
    assert (ddp["weights"], ddp["grads"], ddp["optimizer"]) == (2 * params, 2 * params, 12 * params)
    assert z1["weights"] == 2 * params and z1["grads"] == 2 * params
    assert z1["optimizer"] == -(-12 * params // 8)
    assert z3["total"] == -(-2 * params // 8) * 2 + -(-12 * params // 8)
    fp32 = memory_plan("conan-1.4b", 1, zero_stage=1, dtype="fp32")
    assert fp32["total"] == 16 * params
    with pytest.raises(ConanError, match="dtype"):
        memory_plan("conan-1.4b", 8, dtype="int8")
    with pytest.raises(ConanError, match="did you mean"):
        memory_plan("conan-1.4", 8)


def test_memory_plan_accepts_configs_and_backbone_dicts():
    from conan_core.registries import REGISTRIES

    spec = {k: v for k, v in ARCHITECTURES["conan-1.4b"].items() if k != "vocab_size"}
    config = REGISTRIES["backbones"].build({"type": "conan", **spec}).to_hf_config(150000)
    expected = memory_plan("conan-1.4b", 16)
    assert memory_plan(config, 16) == expected == memory_plan(config.to_dict(), 16)


def test_format_bytes():
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.50 KiB"
    assert format_bytes(3 * 1024 ** 3) == "3.00 GiB"
