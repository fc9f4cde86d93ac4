"""ConanModel / ConanForCausalLM: shapes, the per-call mask, padding, GQA against a float64
reference, gradient checkpointing, init, loss."""

import math

import pytest
import torch
from torch.nn import functional as F

from conan_core.errors import ConanError
from conan_core.model import ConanConfig, ConanForCausalLM, ConanModel, ModelConfigError
from tests.model.model_reference import all_masks, block_reference, build_mask, context, tiny_config


@pytest.fixture
def masks():
    return all_masks()


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    return ConanForCausalLM(tiny_config()).eval()


def batch(lengths, seq_len, vocab=97, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (len(lengths), seq_len), generator=g)
    attn = (torch.arange(seq_len)[None] < torch.tensor(lengths)[:, None]).long()
    return ids, attn


def test_shapes_and_outputs(lm):
    ids, attn = batch([7, 4], 7)
    with torch.no_grad():
        out = lm(ids, attn, output_hidden_states=True)
        base = lm.model(ids, attn, output_hidden_states=True)
        tup = lm.model(ids, attn, return_dict=False)
    assert out.logits.shape == (2, 7, 97) and out.loss is None
    assert base.last_hidden_state.shape == (2, 7, 64)
    assert len(base.hidden_states) == 3 and base.hidden_states[-1] is base.last_hidden_state
    assert torch.equal(tup[0], base.last_hidden_state)
    assert torch.equal(lm.encode(ids, attn), base.last_hidden_state)
    assert torch.equal(lm.model.encode(ids, attn), base.last_hidden_state)
    assert torch.allclose(out.logits, base.last_hidden_state @ lm.lm_head.weight.T, atol=1e-6)
    embeds = lm.get_input_embeddings()(ids)
    assert torch.allclose(lm.model(inputs_embeds=embeds, attention_mask=attn).last_hidden_state,
                          base.last_hidden_state, atol=1e-6)


def test_loss_is_shifted_cross_entropy_ignoring_padding(lm):
    ids, attn = batch([7, 5], 7)
    labels = ids.clone()
    labels[0, 3] = -100
    out = lm(ids, attn, labels=labels)
    logits = out.logits[:, :-1]
    targets = labels[:, 1:].masked_fill(attn[:, 1:] == 0, -100)
    keep = targets != -100
    expected = F.cross_entropy(logits[keep].double(), targets[keep])
    assert out.loss.dtype == torch.float32
    assert math.isclose(out.loss.item(), expected.item(), rel_tol=1e-5)
    loss_tuple = lm(ids, attn, labels=labels, return_dict=False)
    assert torch.equal(loss_tuple[0], out.loss)


def test_mask_is_a_per_call_input(lm, masks):
    ids, attn = batch([7, 7], 7)
    with torch.no_grad():
        causal = lm.encode(ids, attn)
        explicit = lm.encode(ids, attn, mask=masks["causal"])
        bidir = lm.encode(ids, attn, mask=masks["bidirectional"])
        soft0 = lm.encode(ids, attn, mask=masks["soft"], alpha=0.0)
        soft1 = lm.encode(ids, attn, mask=masks["soft"], alpha=1.0)
        soft_half = lm.encode(ids, attn, mask=masks["soft"], alpha=0.5)
        again = lm.encode(ids, attn)
    assert torch.equal(causal, explicit) and torch.equal(causal, again)  # no state kept between calls
    assert not torch.allclose(causal, bidir, atol=1e-3)
    assert torch.allclose(soft0, causal, atol=1e-5) and torch.allclose(soft1, bidir, atol=1e-5)
    assert not torch.allclose(soft_half, causal, atol=1e-4) and not torch.allclose(soft_half, bidir, atol=1e-4)


def test_causal_outputs_ignore_later_tokens(lm, masks):
    ids, _ = batch([8], 8)
    changed = ids.clone()
    changed[0, 5:] = (changed[0, 5:] + 7) % 97
    with torch.no_grad():
        a, b = lm.encode(ids), lm.encode(changed)
        a_bi = lm.encode(ids, mask=masks["bidirectional"])
        b_bi = lm.encode(changed, mask=masks["bidirectional"])
    assert torch.allclose(a[:, :5], b[:, :5], atol=1e-6)
    assert not torch.allclose(a_bi[:, :5], b_bi[:, :5], atol=1e-4)


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
@pytest.mark.parametrize("mask_name,alpha", [("causal", 0.0), ("bidirectional", 1.0), ("soft", 0.4)])
def test_padding_invariance(backend, mask_name, alpha):
    """A right-padded sequence's real-token outputs equal the unpadded run."""
    torch.manual_seed(0)
    model = ConanModel(tiny_config(attention_backend=backend)).eval()
    mask = build_mask(mask_name)
    ids, attn = batch([9, 5, 1], 9, seed=3)
    with torch.no_grad():
        padded = model.encode(ids, attn, mask=mask, alpha=alpha)
        for row, length in enumerate([9, 5, 1]):
            alone = model.encode(ids[row:row + 1, :length], mask=mask, alpha=alpha)
            assert torch.allclose(padded[row, :length], alone[0], atol=2e-5), (row, length)
    assert torch.isfinite(padded).all()


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
@pytest.mark.parametrize("mask_name,alpha", [("causal", 0.0), ("bidirectional", 1.0), ("soft", 0.3)])
def test_block_matches_float64_gqa_reference(backend, mask_name, alpha):
    """One block (4 query heads sharing 2 key/value heads) against an explicit float64 loop."""
    torch.manual_seed(1)
    config = tiny_config(attention_backend=backend, rope_theta=500.0)
    model = ConanModel(config).eval()
    with torch.no_grad():  # non-trivial norm gains
        for p in model.parameters():
            if p.dim() == 1:
                p.copy_(torch.rand_like(p) + 0.5)
    block = model.layers[0]
    mask = build_mask(mask_name)
    x = torch.randn(2, 6, 64)
    ctx = context([6, 4], 6, alpha=alpha)
    positions = torch.arange(6).expand(2, 6)
    from conan_core.model.rope import rope_tables

    cos, sin = rope_tables(positions, config.head_dim, config.rope_theta, torch.float32)
    plan = model.attention_backend.prepare(mask, ctx, torch.float32, x.device)
    with torch.no_grad():
        out, probs = block(x, cos, sin, plan)
    assert probs is None
    ref = block_reference(block, x, mask.matrix(ctx, torch.float64), positions, config)
    real = torch.tensor([[1] * 6, [1] * 4 + [0] * 2], dtype=torch.bool)
    err = (out.double() - ref).abs()[real].max().item()
    assert err < 1e-5, err


def test_float32_model_matches_float64_model(masks):
    torch.manual_seed(2)
    model = ConanModel(tiny_config()).eval()
    ids, attn = batch([8, 6], 8)
    with torch.no_grad():
        out32 = model.encode(ids, attn, mask=masks["soft"], alpha=0.6)
        out64 = model.double().encode(ids, attn, mask=masks["soft"], alpha=0.6)
    assert out64.dtype == torch.float64
    assert (out32.double() - out64)[attn.bool()].abs().max() < 1e-4


def test_gradient_checkpointing_gives_the_same_gradients(masks):
    from conan_core.backbones.conan import enable_checkpointing

    torch.manual_seed(3)
    plain = ConanForCausalLM(tiny_config())
    ckpt = ConanForCausalLM(tiny_config())
    ckpt.load_state_dict(plain.state_dict())
    enable_checkpointing(ckpt)
    assert ckpt.model.gradient_checkpointing
    calls = []
    ckpt.model.layers[0].register_forward_pre_hook(lambda *_: calls.append(1))
    ids, attn = batch([7, 5], 7)
    for model in (plain, ckpt):
        model.train()
        out = model(ids, attn, labels=ids, mask=masks["soft"], alpha=0.5)
        out.loss.backward()
    assert len(calls) == 2  # forward, then recomputed in backward
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6, rtol=1e-5), name


def test_init_statistics():
    torch.manual_seed(4)
    config = tiny_config(hidden_size=128, num_attention_heads=8, num_key_value_heads=4, head_dim=16,
                         intermediate_size=256, num_hidden_layers=8, initializer_range=0.02)
    plain = ConanForCausalLM(config)
    scaled = ConanForCausalLM(tiny_config(**{**config.to_diff_dict(), "scaled_residual_init": True}))
    std = lambda t: t.detach().float().std().item()
    assert abs(std(plain.model.layers[0].self_attn.q_proj.weight) - 0.02) < 0.002
    assert abs(std(plain.model.embed_tokens.weight) - 0.02) < 0.002
    assert abs(std(plain.model.layers[0].self_attn.o_proj.weight) - 0.02) < 0.002
    expected = 0.02 / math.sqrt(2 * 8)
    assert abs(std(scaled.model.layers[3].self_attn.o_proj.weight) - expected) < 0.1 * expected
    assert abs(std(scaled.model.layers[3].mlp.down_proj.weight) - expected) < 0.1 * expected
    assert abs(std(scaled.model.layers[3].mlp.up_proj.weight) - 0.02) < 0.002
    assert torch.equal(plain.model.norm.weight, torch.ones(128))
    assert torch.equal(plain.model.layers[1].input_layernorm.weight, torch.ones(128))


def test_tied_embeddings_share_one_tensor():
    model = ConanForCausalLM(tiny_config(tie_word_embeddings=True))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    untied = ConanForCausalLM(tiny_config())
    assert untied.lm_head.weight is not untied.model.embed_tokens.weight


def test_packed_rows_equal_separate_documents():
    """segment_ids + the document mask: positions restart per document and attention stays inside."""
    torch.manual_seed(5)
    model = ConanModel(tiny_config()).eval()
    doc_mask = build_mask("document")
    ids, _ = batch([7], 7, seed=9)
    segments = torch.tensor([[0, 0, 0, 1, 1, 1, 1]])
    with torch.no_grad():
        packed = model.encode(ids, mask=doc_mask, segment_ids=segments)
        first = model.encode(ids[:, :3])
        second = model.encode(ids[:, 3:])
    assert torch.allclose(packed[0, :3], first[0], atol=1e-5)
    assert torch.allclose(packed[0, 3:], second[0], atol=1e-5)


def test_errors_name_the_problem(lm):
    ids, attn = batch([5], 5)
    with pytest.raises(ConanError, match="KV cache needs a causal mask"):
        lm(ids, use_cache=True, mask=build_mask("bidirectional"))
    with pytest.raises(ConanError, match="only 0"):
        lm.model(ids, attn * 2)
    with pytest.raises(ConanError, match="attention_mask must be"):
        lm.model(ids, attn[:, :3])
    with pytest.raises(ConanError, match="exactly one of input_ids"):
        lm.model()
    with pytest.raises(ModelConfigError, match="multiple of num_key_value_heads"):
        ConanConfig(num_attention_heads=4, num_key_value_heads=3)
    with pytest.raises(ModelConfigError, match="even"):
        ConanConfig(head_dim=15)
    from conan_core.errors import UnknownKeyError

    with pytest.raises(UnknownKeyError, match="attention_backend"):
        ConanModel(tiny_config(attention_backend="sdpaa"))


def test_autocast_bf16_runs_and_stays_close(masks):
    torch.manual_seed(6)
    model = ConanForCausalLM(tiny_config()).eval()
    ids, attn = batch([8, 5], 8)
    with torch.no_grad():
        ref = model.encode(ids, attn, mask=masks["soft"], alpha=0.5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.encode(ids, attn, mask=masks["soft"], alpha=0.5)
    assert low.dtype in (torch.bfloat16, torch.float32)
    assert (low.float() - ref)[attn.bool()].abs().max() < 0.1


def test_encode_goes_through_the_root_module_call(lm):
    """encode() = forward(return_hidden=True) via __call__, so hooks of wrappers (DDP, FSDP2) run."""
    calls = []
    handles = [lm.register_forward_pre_hook(lambda *_: calls.append("lm")),
               lm.model.register_forward_pre_hook(lambda *_: calls.append("model"))]
    ids, attn = batch([6, 3], 6)
    try:
        with torch.no_grad():
            hidden = lm.encode(ids, attn)
            direct = lm(ids, attn, return_hidden=True)
    finally:
        for h in handles:
            h.remove()
    assert calls == ["lm", "model", "lm", "model"]
    assert torch.equal(hidden, direct) and hidden.shape == (2, 6, 64)
