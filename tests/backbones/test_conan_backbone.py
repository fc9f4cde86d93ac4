"""The `conan` backbone: tiny defaults, build (real and meta), checkpointing, config errors."""

import pytest
import torch

from conan_core.errors import ConfigError
from conan_core.model import ARCHITECTURES, ConanForCausalLM
from conan_core.registries import REGISTRIES


def test_defaults_are_the_tiny_architecture():
    backbone = REGISTRIES["backbones"].build({"type": "conan"})
    config = backbone.to_hf_config(ARCHITECTURES["tiny"]["vocab_size"])
    for field, value in ARCHITECTURES["tiny"].items():
        assert getattr(config, field) == value, field
    assert config.attention_backend == "sdpa" and config.norm == "torch"


def test_build_gives_a_working_causal_lm():
    backbone = REGISTRIES["backbones"].build({"type": "conan", "attention": {"type": "eager"}})
    model = backbone.build(50)
    assert isinstance(model, ConanForCausalLM) and model.config.vocab_size == 50
    assert model.config.attention_backend == "eager"
    ids = torch.randint(0, 50, (2, 5))
    hidden = model.encode(ids, torch.ones_like(ids), mask=REGISTRIES["masks"].build("bidirectional"))
    assert hidden.shape == (2, 5, 64) and torch.isfinite(hidden).all()
    assert model.get_output_embeddings().weight.shape == (50, 64)


def test_nested_specs_with_fields_are_kept():
    backbone = REGISTRIES["backbones"].build({"type": "conan", "attention": {"type": "sdpa", "dispatch": False}})
    config = backbone.to_hf_config(10)
    assert config.attention_backend == {"type": "sdpa", "dispatch": False}
    model = backbone.build(10)
    assert model.model.attention_backend.config.dispatch is False


def test_meta_build_allocates_nothing():
    spec = {"type": "conan", **{k: v for k, v in ARCHITECTURES["conan-1.4b"].items() if k != "vocab_size"}}
    model = REGISTRIES["backbones"].build(spec).build(150000, meta=True)
    assert {p.device.type for p in model.parameters()} == {"meta"}


def test_gradient_checkpointing_field():
    model = REGISTRIES["backbones"].build({"type": "conan", "gradient_checkpointing": True}).build(30)
    assert model.model.gradient_checkpointing
    assert not REGISTRIES["backbones"].build({"type": "conan"}).build(30).model.gradient_checkpointing


def test_config_errors_have_paths():
    with pytest.raises(ConfigError, match="multiple of num_key_value_heads"):
        REGISTRIES["backbones"].build({"type": "conan", "num_attention_heads": 4, "num_key_value_heads": 3})
    with pytest.raises(ConfigError, match="attention.type"):
        REGISTRIES["backbones"].build({"type": "conan", "attention": {"type": "sdpaa"}})
    with pytest.raises(ConfigError, match="hidden_sise"):
        REGISTRIES["backbones"].build({"type": "conan", "hidden_sise": 3})
