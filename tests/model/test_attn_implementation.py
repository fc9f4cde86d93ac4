"""``attn_implementation`` selects the attention backend and the config names what runs;
``output_attentions`` returns the probabilities (checked against a float64 reference)."""

import json
import math

import pytest
import torch

from conan_core.errors import ConanError
from conan_core.model import ConanForCausalLM, ConanModel
from tests.model.model_reference import build_mask, rms64, rope64, tiny_config


def backend_name(model):
    base = model.model if isinstance(model, ConanForCausalLM) else model
    return type(base.attention_backend).__name__


@pytest.mark.parametrize("key,impl,cls", [("eager", "eager", "EagerAttention"), ("sdpa", "sdpa", "SDPAAttention"),
                                          ("flex", "flex_attention", "FlexAttentionBackend")])
def test_the_config_backend_is_what_runs_and_what_is_reported(key, impl, cls):
    model = ConanForCausalLM(tiny_config(attention_backend=key))
    assert model.config._attn_implementation == impl and backend_name(model) == cls
    with torch.no_grad():
        model(torch.randint(3, 97, (1, 4)))
    assert model.model.attention_backend.last_path is not None


def test_from_pretrained_attn_implementation_overrides_and_is_saved(tmp_path):
    ConanForCausalLM(tiny_config(attention_backend={"type": "flex", "compile": "never"})).save_pretrained(tmp_path / "a")
    kept = ConanForCausalLM.from_pretrained(tmp_path / "a", attn_implementation="flex_attention")
    assert kept.config.attention_backend == {"type": "flex", "compile": "never"}  # options kept
    eager = ConanForCausalLM.from_pretrained(tmp_path / "a", attn_implementation="eager")
    assert eager.config._attn_implementation == "eager" and backend_name(eager) == "EagerAttention"
    eager.save_pretrained(tmp_path / "b")
    assert json.loads((tmp_path / "b" / "config.json").read_text())["attention_backend"] == "eager"
    assert backend_name(ConanForCausalLM.from_pretrained(tmp_path / "b")) == "EagerAttention"


def test_changing_the_config_on_a_live_model_switches_the_backend():
    model = ConanModel(tiny_config()).eval()
    ids = torch.randint(3, 97, (2, 6))
    with torch.no_grad():
        before = model.encode(ids)
        model.config._attn_implementation = "eager"
        after = model.encode(ids)
    assert type(model.attention_backend).__name__ == "EagerAttention"
    assert model.config.attention_backend == "eager"
    assert model.attention_backend.last_path == "log_bias"
    assert torch.allclose(before, after, atol=1e-5)


def test_unknown_implementations_are_refused_with_the_choices():
    model = ConanModel(tiny_config())
    for name in ("flash_attention_2", "sdpaa"):
        with pytest.raises(ConanError, match="Valid: 'eager', 'flex_attention', 'sdpa'"):
            model.set_attn_implementation(name)
    with pytest.raises(ValueError):  # also a ValueError, which transformers' callers expect
        ConanModel(tiny_config(attn_implementation="flash_attention_2"))


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_output_attentions_match_a_float64_reference(backend):
    """Layer 0's probabilities under a soft mask with padding: ``M exp(s) / sum M exp(s)``."""
    torch.manual_seed(3)
    config = tiny_config(attention_backend=backend, rope_theta=500.0)
    model = ConanModel(config).eval()
    mask = build_mask("soft")
    ids = torch.randint(3, 97, (2, 7))
    attn = torch.tensor([[1] * 7, [0, 0, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        out = model(ids, attn, mask=mask, alpha=0.4, output_attentions=True)
        plain = model(ids, attn, mask=mask, alpha=0.4)
    assert backend_name(model) == {"sdpa": "SDPAAttention", "eager": "EagerAttention"}[backend]
    assert torch.allclose(out.last_hidden_state, plain.last_hidden_state, atol=1e-5)
    probs = out.attentions[0]
    assert probs.shape == (2, 4, 7, 7) and probs.dtype == torch.float32

    # float64 reference of layer 0 from its weights
    layer, d = model.layers[0], config.head_dim
    x = model.embed_tokens.weight.double()[ids]
    h = rms64(x, layer.input_layernorm.weight, config.rms_norm_eps)
    q = (h @ layer.self_attn.q_proj.weight.double().T).view(2, 7, 4, d)
    k = (h @ layer.self_attn.k_proj.weight.double().T).view(2, 7, 2, d)
    positions = (attn.cumsum(-1) - 1).clamp_min(0)
    q, k = rope64(q, positions, config.rope_theta), rope64(k, positions, config.rope_theta)
    from conan_core.masks.base import MaskContext

    ctx = MaskContext(attn.sum(-1), 7, alpha=0.4, valid=attn.bool())
    m = mask.matrix(ctx, torch.float64)
    for head in range(4):
        s = torch.einsum("bid,bjd->bij", q[:, :, head], k[:, :, head // 2]) / math.sqrt(d)
        w = m * torch.exp(s - s.masked_fill(m == 0, -math.inf).amax(-1, keepdim=True))
        w = w / w.sum(-1, keepdim=True)
        real = attn.bool()
        assert (probs[:, head].double() - w)[real].abs().max() < 1e-5, head


def test_output_flags_from_the_config():
    model = ConanModel(tiny_config(output_hidden_states=True, output_attentions=True))
    with torch.no_grad():
        out = model(torch.randint(3, 97, (1, 5)))
    assert len(out.hidden_states) == 3 and len(out.attentions) == 2
    # the flag does not take the whole model off its backend (transformers' default config would)
    assert model.config._attn_implementation == "sdpa" and backend_name(model) == "SDPAAttention"
    model.config.output_attentions = False
    model.config.output_attentions = True  # allowed under sdpa too
    assert model.config.output_attentions and "output_attentions" in model.config.to_dict()
    with torch.no_grad():
        off = model(torch.randint(3, 97, (1, 5)), output_hidden_states=False, output_attentions=False)
    assert off.hidden_states is None and off.attentions is None
