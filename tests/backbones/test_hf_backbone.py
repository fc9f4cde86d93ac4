"""The `hf` backbone: our mask reaches a transformers decoder's attention (conformance), the probe
catches libraries that ignore it, and pretrained directories load."""

import subprocess
import sys

import pytest
import torch

from conan_core.backbones.hf import HFDecoder, MaskIgnoredError, check_mask_reaches_attention, verify_mask_effect
from conan_core.errors import ConanError
from conan_core.model import ConanForCausalLM
from conan_core.model.llama import from_llama_config
from conan_core.registries import REGISTRIES


def masks():
    return {"causal": REGISTRIES["masks"].build("causal"),
            "bidirectional": REGISTRIES["masks"].build("bidirectional"),
            "soft": REGISTRIES["masks"].build("soft"),
            "document": REGISTRIES["masks"].build({"type": "document", "within": "bidirectional"})}


def batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 90, (3, 8), generator=g)
    attn = torch.tensor([[1] * 8, [1] * 5 + [0] * 3, [1] * 2 + [0] * 6])
    return ids, attn


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_mask_reaches_attention_and_matches_conan(impl):
    """An HF Llama fed our 4-D mask equals ConanModel (same weights; ConanModel is itself checked
    against a float64 reference in tests/model) under causal, bidirectional, soft and document masks."""
    torch.manual_seed(0)
    decoder = REGISTRIES["backbones"].build({"type": "hf", "attn_implementation": impl}).build(90)
    assert isinstance(decoder, HFDecoder)
    ours = ConanForCausalLM(from_llama_config(decoder.config, attention_backend="eager")).eval()
    ours.load_state_dict(decoder.hf.state_dict(), strict=True)
    decoder.eval()
    ids, attn = batch()
    real = attn.bool()
    seg = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1]] * 3)
    outputs = {}
    with torch.no_grad():
        for name, mask in masks().items():
            for alpha in ([0.25, 0.75] if name == "soft" else [0.0]):
                kw = dict(mask=mask, alpha=alpha, segment_ids=seg if name == "document" else None)
                theirs = decoder.encode(ids, attn, **kw)
                mine = ours.encode(ids, attn, **kw)
                err = (theirs - mine)[real].abs().max().item()
                assert err < 1e-5, (name, alpha, err)
                outputs[(name, alpha)] = theirs
    diff = (outputs[("causal", 0.0)] - outputs[("bidirectional", 0.0)])[real].abs().max()
    assert diff > 1e-3  # the mask changes the function
    soft = outputs[("soft", 0.25)]
    assert (soft - outputs[("causal", 0.0)])[real].abs().max() > 1e-4
    assert (soft - outputs[("soft", 0.75)])[real].abs().max() > 1e-4


def test_forward_loss_and_base_model_call():
    decoder = REGISTRIES["backbones"].build({"type": "hf"}).build(90)
    ids, attn = batch()
    out = decoder(ids, attn, labels=ids)
    assert out.logits.shape == (3, 8, 90) and out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert decoder.get_input_embeddings().weight.grad is not None
    with torch.no_grad():
        base = decoder.model(ids, attn, mask=masks()["bidirectional"])
        assert torch.equal(base.last_hidden_state, decoder.encode(ids, attn, mask=masks()["bidirectional"]))
        assert torch.equal(decoder(ids, attn, return_hidden=True), decoder.encode(ids, attn))
    names = [n for n, _ in decoder.named_parameters()]
    assert len(names) == len(set(names)) and all(n.startswith("hf.") for n in names)


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "mistral"])
def test_probe_passes_for_supported_decoders(model_type):
    check_mask_reaches_attention(model_type, "eager")
    decoder = REGISTRIES["backbones"].build({"type": "hf", "model_type": model_type}).build(40)  # probes sdpa
    ids, attn = batch()
    ids = ids % 40
    with torch.no_grad():
        c = decoder.encode(ids, attn)
        b = decoder.encode(ids, attn, mask=masks()["bidirectional"])
    assert (c - b)[attn.bool()].abs().max() > 1e-4


def test_probe_rejects_outputs_that_ignore_the_mask():
    """When a library ignores custom 4-D masks, the "bidirectional" run equals the causal one
    (one layer, as in the probe: there the last token is the same under both masks)."""
    torch.manual_seed(0)
    decoder = REGISTRIES["backbones"].build({"type": "hf", "check_mask": False, "num_hidden_layers": 1}).build(30).eval()
    ids = torch.randint(0, 30, (1, 5))
    with torch.no_grad():
        causal = decoder.hf.base_model(input_ids=ids, use_cache=False).last_hidden_state
        bidir = decoder.encode(ids, mask=masks()["bidirectional"])
    verify_mask_effect(causal, bidir, "llama", "sdpa")  # the real thing passes
    with pytest.raises(MaskIgnoredError) as info:
        verify_mask_effect(causal, causal.clone(), "llama", "sdpa")
    import transformers

    assert f"transformers {transformers.__version__}" in str(info.value)
    assert "never reached attention" in str(info.value)
    with pytest.raises(MaskIgnoredError, match="additive bias"):
        verify_mask_effect(causal, bidir + 1.0, "llama", "sdpa")


def test_probe_failure_is_a_conan_error():
    with pytest.raises(MaskIgnoredError, match="could not run the 4-D attention-mask probe"):
        check_mask_reaches_attention("t5", "sdpa")  # no causal-LM class: the probe cannot run


def test_pretrained_directory_loads(tmp_path):
    torch.manual_seed(1)
    first = REGISTRIES["backbones"].build({"type": "hf"}).build(60).eval()
    first.save_pretrained(tmp_path)
    again = REGISTRIES["backbones"].build({"type": "hf", "path": str(tmp_path)}).build(60).eval()
    ids, attn = batch()
    ids = ids % 60
    soft = masks()["soft"]
    with torch.no_grad():
        assert torch.equal(first.encode(ids, attn, mask=soft, alpha=0.5), again.encode(ids, attn, mask=soft, alpha=0.5))
    meta = REGISTRIES["backbones"].build({"type": "hf", "path": str(tmp_path)}).build(60, meta=True)
    assert {p.device.type for p in meta.parameters()} == {"meta"}
    with pytest.raises(ConanError, match="token embeddings"):
        REGISTRIES["backbones"].build({"type": "hf", "path": str(tmp_path)}).build(61)


def test_unknown_model_type_is_reported():
    with pytest.raises(ConanError, match="model_type"):
        REGISTRIES["backbones"].build({"type": "hf", "model_type": "no-such-model"}).build(10)


def test_backbone_modules_do_not_import_transformers():
    code = ("import sys, conan_core, conan_core.backbones.conan, conan_core.backbones.hf;"
            "from conan_core.registries import REGISTRIES; REGISTRIES['backbones'].get('hf');"
            "REGISTRIES['backbones'].get('conan'); print('transformers' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(2)
    plain = REGISTRIES["backbones"].build({"type": "hf"}).build(50)
    ckpt = REGISTRIES["backbones"].build({"type": "hf", "gradient_checkpointing": True}).build(50)
    ckpt.load_state_dict(plain.state_dict())
    ids, attn = batch()
    ids = ids % 50
    soft = masks()["soft"]
    calls = []
    ckpt.hf.base_model.layers[0].mlp.register_forward_pre_hook(lambda *_: calls.append(1))
    for model in (plain, ckpt):
        model.train()
        model.encode(ids, attn, mask=soft, alpha=0.5)[attn.bool()].pow(2).mean().backward()
    assert len(calls) == 2  # the block ran again in backward
    theirs = dict(ckpt.named_parameters())
    for name, p in plain.named_parameters():
        if name == "hf.lm_head.weight":  # encode() does not use the LM head
            assert p.grad is None and theirs[name].grad is None
            continue
        assert torch.allclose(p.grad, theirs[name].grad, atol=1e-6, rtol=1e-5), name
