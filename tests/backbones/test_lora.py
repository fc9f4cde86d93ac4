"""LoRA (peft) on the ``conan`` and ``hf`` backbones: spec validation, injection (base frozen,
adapters start as an exact no-op), the merge against peft's own merge and a float64 formula, the
mask reaching attention through an adapted transformers decoder, and the weak stage on a
randomly initialised Qwen2 training only the adapters while final/ holds the merged weights."""

from __future__ import annotations

import copy
import logging
import signal

import pytest
import torch

from conan_core.backbones.hf import verify_mask_effect
from conan_core.backbones.lora import adapter_host, has_lora, merged_state_dict
from conan_core.errors import ConanError, ConfigError
from conan_core.registries import REGISTRIES
from tests.backbones.harness import TINY_HF

LORA = {"r": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "down_proj"]}
SPECS = {"conan": {"type": "conan", "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2,
                   "head_dim": 8, "intermediate_size": 64, "initializer_range": 0.2},
         "hf": TINY_HF}


def mask(key: str, **fields):
    return REGISTRIES["masks"].build({"type": key, **fields})


def batch(vocab: int = 90):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (3, 7), generator=g)
    attn = torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [1] * 3 + [0] * 4])
    return ids, attn


def build(kind: str, lora: dict | None = LORA, vocab: int = 90, **sizes):
    torch.manual_seed(0)
    spec = {**SPECS[kind], **sizes, **({"lora": lora} if lora is not None else {})}
    return REGISTRIES["backbones"].build(spec).build(vocab)


@pytest.mark.parametrize("kind", ["conan", "hf"])
def test_a_wrong_target_fails_validation_with_a_suggestion(kind):
    with pytest.raises(ConfigError, match=r"'q_prj' \(did you mean 'q_proj'\?\) names no linear layer"):
        REGISTRIES["backbones"].resolve({**SPECS[kind], "lora": {"target_modules": ["q_prj"]}})
    for bad in ({"target_modules": []}, {"target_modules": ["layers.0.q_proj"]}, {"r": 0}, {"dropout": 1.0},
                {"rank": 4}):
        with pytest.raises(ConfigError):
            REGISTRIES["backbones"].resolve({**SPECS[kind], "lora": bad})


@pytest.mark.parametrize("kind", ["conan", "hf"])
def test_adapters_start_as_a_no_op_and_only_they_train(kind):
    plain = build(kind, lora=None).eval()
    adapted = build(kind).eval()
    assert has_lora(adapted) and not has_lora(plain)
    ids, attn = batch()
    with torch.no_grad():
        for key in ("causal", "bidirectional"):
            assert torch.equal(adapted.encode(ids, attn, mask=mask(key)), plain.encode(ids, attn, mask=mask(key)))
    trainable = {n: p.numel() for n, p in adapted.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A.default." in n or ".lora_B.default." in n for n in trainable)
    layers = 2
    # q_proj 32 -> 32, v_proj 32 -> 16 (2 kv heads x 8), down_proj 64 -> 32; A is [r, in], B is [out, r]
    per_layer = sum(LORA["r"] * (fan_in + fan_out) for fan_in, fan_out in ((32, 32), (32, 16), (64, 32)))
    assert sum(trainable.values()) == layers * per_layer
    with pytest.raises(ConanError, match="already carries LoRA"):
        REGISTRIES["backbones"].build({**SPECS[kind], "lora": LORA}).adapt(adapted)


@pytest.mark.parametrize("kind", ["conan", "hf"])
def test_merge_matches_peft_and_a_float64_formula(kind):
    adapted = build(kind).eval()
    host = adapter_host(adapted)
    _train_adapters(host)
    state = host.state_dict()
    merged = merged_state_dict(state, LORA["alpha"] / LORA["r"])
    assert not any("lora_" in k or "base_layer" in k for k in merged)

    reference = copy.deepcopy(host)
    reference = _peft_merge(reference)
    assert set(reference.state_dict()) == set(merged)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(merged[key], value, rtol=0, atol=1e-6, msg=key)
    scaling = LORA["alpha"] / LORA["r"]
    for prefix in {k.split(".base_layer.")[0] for k in state if ".base_layer." in k}:
        w = state[f"{prefix}.base_layer.weight"].double()
        a, b = state[f"{prefix}.lora_A.default.weight"].double(), state[f"{prefix}.lora_B.default.weight"].double()
        torch.testing.assert_close(merged[f"{prefix}.weight"].double(), w + scaling * b @ a, rtol=0, atol=1e-6)

    plain = build(kind, lora=None).eval()
    adapter_host(plain).load_state_dict(merged, strict=True)
    ids, attn = batch()
    with torch.no_grad():
        got = plain.encode(ids, attn, mask=mask("bidirectional"))
        want = adapted.encode(ids, attn, mask=mask("bidirectional"))
    real = attn.bool()
    assert (got - want)[real].abs().max() < 1e-5


def _train_adapters(model: torch.nn.Module) -> None:
    """Give every adapter a nonzero B, as training does after its first step."""
    g = torch.Generator().manual_seed(3)
    for name, p in model.named_parameters():
        if ".lora_B." in name:
            p.data.copy_(torch.randn(p.shape, generator=g) * 0.1)


def _peft_merge(module: torch.nn.Module) -> torch.nn.Module:
    """peft's own merge: every LoRA layer merged in place and replaced by its base layer."""
    from peft.tuners.lora import LoraLayer

    for name, child in list(module.named_modules()):
        if isinstance(child, LoraLayer):
            child.merge()
            parent = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
            setattr(parent, name.rsplit(".", 1)[-1], child.get_base_layer())
    return module


def test_the_soft_mask_reaches_attention_through_an_adapted_decoder():
    """LLM2Vec-style adaptation: a Qwen2 with LoRA still reads our 4-D mask (the probe's verdict on
    the adapted model itself), soft masks lie between causal and bidirectional, and gradients of
    an embedding loss under the soft mask reach the adapters only."""
    ids, attn = batch()
    one_layer = build("hf", num_hidden_layers=1).eval()  # the probe's setting: one layer, so the last
    with torch.no_grad():  # token sees every token under either mask and must not change
        _train_adapters(one_layer)
        causal = one_layer.encode(ids[:1], mask=mask("causal"))
        bidirectional = one_layer.encode(ids[:1], mask=mask("bidirectional"))
    verify_mask_effect(causal, bidirectional, "qwen2", "sdpa")

    decoder = build("hf").train()
    with torch.no_grad():
        _train_adapters(decoder)  # past the first step: A's gradient is zero while B is
        soft = decoder.encode(ids, attn, mask=mask("soft"), alpha=0.5)
        for key in ("causal", "bidirectional"):
            assert (soft - decoder.encode(ids, attn, mask=mask(key)))[attn.bool()].abs().max() > 1e-4, key
    hidden = decoder.encode(ids, attn, mask=mask("soft"), alpha=0.5)
    pooled = (hidden * attn[..., None]).sum(1) / attn.sum(1, keepdim=True)
    (pooled @ pooled.T).logsumexp(1).mean().backward()
    for name, p in decoder.named_parameters():
        if ".lora_" in name:
            assert p.grad is not None and p.grad.abs().max() > 0, name
        else:
            assert p.grad is None, name


@pytest.mark.slow
def test_weak_stage_with_lora_trains_only_the_adapters(tmp_path, caplog):
    """The weak stage on a randomly initialised Qwen2 (model.path) with LoRA: the base weights in
    the stage's checkpoint are bit-identical to the starting model, the adapters moved, final/
    holds plain merged weights (W + alpha/r B A) that the next stage and Embedder load, and a
    stage killed mid-way resumes to the same final/."""
    from safetensors.torch import load_file

    from conan_core.backbones.hf import HFDecoder
    from conan_core.builder import build_backbone
    from conan_core.config import load_config
    from conan_core.embedder import Embedder
    from conan_core.tokenizer import load_tokenizer
    from conan_core.train.prepare import prepare_run, tokenizer_dir
    from conan_core.train.stages import run_stage
    from conan_core.train.stages.common import load_final_model
    from tests.train.harness import copy_run, run_cli

    run, base_dir = tmp_path / "run", tmp_path / "qwen2"
    sizes = {k: v for k, v in TINY_HF.items() if k != "type"}
    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    overrides = ["data.demo_scale=0.1", "tokenizer.vocab_size=600", "pretrain.enabled=false", "sft.enabled=false",
                 "weak.steps=6", "weak.batch_size=8", "weak.max_length=48", "weak.lr=1e-2", "weak.checkpoint_every=3",
                 "model.type=hf", f"model.path={base_dir}", f"model.lora={lora}"]
    overrides += [f"model.{k}={v}" for k, v in sizes.items() if k != "model_type"]
    cfg = load_config("tiny", overrides)
    prepare_run(cfg, run, progress=False)
    vocab = len(load_tokenizer(tokenizer_dir(cfg, run)))
    torch.manual_seed(0)
    REGISTRIES["backbones"].build({**TINY_HF}).build(vocab).save_pretrained(str(base_dir))
    start = load_file(str(base_dir / "model.safetensors"))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with caplog.at_level(logging.INFO, logger="conan_core.train"):
            run_stage(cfg, "weak", run, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert f"starting from the pretrained model in {base_dir}" in caplog.text
    assert "randomly initialised" not in caplog.text

    checkpoint = load_file(str(run / "weak" / "checkpoints" / "step-000006" / "model.safetensors"))
    prefix = "model.hf."
    adapters = {k[len(prefix):]: v for k, v in checkpoint.items() if ".lora_" in k}
    assert len(adapters) == 2 * 2 * 2  # 2 layers x (q_proj, v_proj) x (A, B)
    assert all(v.abs().max() > 0 for k, v in adapters.items() if ".lora_B." in k), "the adapters did not train"
    base = {k[len(prefix):].replace(".base_layer.", "."): v for k, v in checkpoint.items()
            if k.startswith(prefix) and ".lora_" not in k}
    assert set(base) == set(start)
    for key, value in start.items():
        assert torch.equal(base[key], value), f"base weight {key} changed"

    final = load_file(str(run / "weak" / "final" / "model.safetensors"))
    assert set(final) == set(start)  # plain names, no adapter entries
    scaling = lora["alpha"] / lora["r"]
    for key, value in start.items():
        module, leaf = key.rsplit(".", 1)
        a = adapters.get(f"{module}.lora_A.default.weight") if leaf == "weight" else None
        if a is None:  # not adapted (or a bias of an adapted layer): unchanged
            assert torch.equal(final[key], value), key
        else:
            b = adapters[f"{module}.lora_B.default.weight"]
            want = value.double() + scaling * b.double() @ a.double()
            torch.testing.assert_close(final[key].double(), want, rtol=0, atol=1e-6, msg=key)
            assert not torch.equal(final[key], value)
    # the next stage starts from the merged weights with fresh adapters; Embedder sees plain weights
    nxt = load_final_model(build_backbone(cfg), run / "weak" / "final", vocab)
    assert isinstance(nxt, HFDecoder) and has_lora(nxt)
    assert all(torch.equal(v, final[k]) for k, v in merged_state_dict(adapter_host(nxt).state_dict(), scaling).items()
               if k in final)
    embedder = Embedder.load(run)
    assert not has_lora(embedder.model) and embedder.encode(["a text"]).shape == (1, 32)

    # SIGKILL mid-stage and resume (adapters injected again, then read from the checkpoint): exact
    out = copy_run(run, tmp_path / "killed", ())
    args = ["weak", str(out / "config.yaml"), "--run-dir", str(out), "--no-progress"]
    killed = run_cli(args, fault="kill@step=5")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed = run_cli(args)
    assert resumed.returncode == 0 and "step-000003" in resumed.stderr, resumed.stderr[-3000:]
    again = load_file(str(out / "weak" / "final" / "model.safetensors"))
    assert again.keys() == final.keys() and all(torch.equal(again[k], final[k]) for k in final)
