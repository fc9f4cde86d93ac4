"""ConanForCausalLM and transformers' LlamaForCausalLM share state dicts and compute the same
function under the causal mask (Llama-style block: RMSNorm, RoPE, SwiGLU, GQA)."""

import pytest
import torch
from transformers import LlamaForCausalLM

from conan_core.model import ConanForCausalLM
from conan_core.model.llama import from_llama_config, to_llama_config
from tests.model.model_reference import tiny_config


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_same_logits_as_llama_with_copied_weights(impl):
    torch.manual_seed(0)
    config = tiny_config(rope_theta=1000.0, rms_norm_eps=1e-5)
    ours = ConanForCausalLM(config).eval()
    llama = LlamaForCausalLM(to_llama_config(config, attn_implementation=impl)).eval()
    result = llama.load_state_dict(ours.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    ids = torch.randint(3, 97, (3, 9))
    attn = torch.tensor([[1] * 9, [1] * 6 + [0] * 3, [1] * 2 + [0] * 7])
    with torch.no_grad():
        a = ours(ids, attn).logits
        b = llama(ids, attention_mask=attn).logits
    real = attn.bool()
    assert (a - b)[real].abs().max() < 1e-5


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_same_logits_as_llama_with_left_padding_and_holes(impl):
    """Padding anywhere: Conan derives positions from the mask; Llama gets them (cumsum rule)."""
    torch.manual_seed(0)
    config = tiny_config(rope_theta=1000.0, rms_norm_eps=1e-5, attention_backend=impl)
    ours = ConanForCausalLM(config).eval()
    llama = LlamaForCausalLM(to_llama_config(config, attn_implementation=impl)).eval()
    llama.load_state_dict(ours.state_dict())
    ids = torch.randint(3, 97, (3, 9))
    attn = torch.tensor([[0] * 3 + [1] * 6, [1, 1, 0, 1, 0, 1, 1, 1, 0], [0, 1, 1, 0, 0, 1, 1, 1, 1]])
    positions = (attn.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        a = ours(ids, attn).logits
        b = llama(ids, attention_mask=attn, position_ids=positions).logits
    assert (a - b)[attn.bool()].abs().max() < 1e-5


def test_config_conversion_round_trip():
    config = tiny_config(rope_theta=12345.0, tie_word_embeddings=True)
    back = from_llama_config(to_llama_config(config))
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "head_dim", "intermediate_size", "max_position_embeddings",
                 "rope_theta", "rms_norm_eps", "tie_word_embeddings"):
        assert getattr(back, name) == getattr(config, name), name
