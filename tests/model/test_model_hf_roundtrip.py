"""save_pretrained -> from_pretrained / AutoModel round trips give identical outputs."""

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from conan_core.model import ConanConfig, ConanForCausalLM, ConanModel, register_auto
from tests.model.model_reference import build_mask, tiny_config


def sample():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 97, (2, 6), generator=g)
    attn = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    return ids, attn


@pytest.mark.parametrize("tied", [False, True])
def test_causal_lm_round_trip(tmp_path, tied):
    torch.manual_seed(0)
    model = ConanForCausalLM(tiny_config(tie_word_embeddings=tied)).eval()
    model.save_pretrained(tmp_path)
    soft = build_mask("soft")
    ids, attn = sample()
    loaded = [ConanForCausalLM.from_pretrained(tmp_path), AutoModelForCausalLM.from_pretrained(tmp_path)]
    with torch.no_grad():
        expected = model(ids, attn, mask=soft, alpha=0.3).logits
        for other in loaded:
            assert type(other) is ConanForCausalLM
            other.eval()
            assert torch.equal(other(ids, attn, mask=soft, alpha=0.3).logits, expected)
            assert (other.lm_head.weight is other.model.embed_tokens.weight) == tied
    assert type(AutoConfig.from_pretrained(tmp_path)) is ConanConfig


def test_auto_model_loads_the_base_model(tmp_path):
    torch.manual_seed(1)
    model = ConanForCausalLM(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    base = AutoModel.from_pretrained(tmp_path).eval()
    assert type(base) is ConanModel
    ids, attn = sample()
    with torch.no_grad():
        assert torch.equal(base.encode(ids, attn), model.encode(ids, attn))
        out = base(input_ids=ids, attention_mask=attn)
    assert torch.equal(out.last_hidden_state, model.encode(ids, attn))


def test_base_model_round_trip_and_runtime_overrides(tmp_path):
    torch.manual_seed(2)
    model = ConanModel(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    ids, attn = sample()
    mask = build_mask("bidirectional")
    eager = ConanModel.from_pretrained(tmp_path, attention_backend="eager").eval()
    assert eager.config.attention_backend == "eager" and eager.attention_backend.__class__.__name__ == "EagerAttention"
    with torch.no_grad():
        assert torch.allclose(eager.encode(ids, attn, mask=mask), model.encode(ids, attn, mask=mask), atol=1e-5)


def test_register_auto_is_idempotent():
    register_auto()
    register_auto()
    config = AutoConfig.for_model("conan", hidden_size=32, num_attention_heads=2, num_key_value_heads=1)
    assert isinstance(config, ConanConfig) and config.head_dim == 16
    assert type(AutoModelForCausalLM.from_config(config)) is ConanForCausalLM
