"""compile_blocks: every decoder block compiles without graph breaks, the steady state does not
recompile when alpha, lengths or tokens change, and compiled outputs match a float64 reference.

Graph breaks and recompiles are Dynamo's (the tracer), whatever compiler backend runs the graph,
so these checks use ``aot_eager`` (seconds on CPU); test_compile_inductor.py runs Inductor itself."""

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from conan_core.errors import ConanError
from conan_core.model import ConanForCausalLM
from conan_core.model.compile import blocks_compiled, compile_blocks
from conan_core.model.rope import rope_tables
from tests.model.model_reference import build_mask, tiny_config


def pair(backend="sdpa", seed=0):
    """A float32 model with compiled blocks and its float64 eager twin (same weights)."""
    torch.manual_seed(seed)
    model = ConanForCausalLM(tiny_config(attention_backend=backend))
    reference = ConanForCausalLM(tiny_config(attention_backend="eager")).double()
    reference.load_state_dict(model.state_dict())
    return model, reference


def batch(step, seq_len=12, batch_size=3):
    g = torch.Generator().manual_seed(100 + step)
    ids = torch.randint(3, 97, (batch_size, seq_len), generator=g)
    lengths = torch.randint(2, seq_len + 1, (batch_size,), generator=g)
    lengths[0] = seq_len
    return ids, (torch.arange(seq_len)[None] < lengths[:, None]).long()


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_training_steps_have_no_graph_breaks_and_no_recompiles(backend):
    """Four soft-mask training steps (alpha, lengths and tokens change every step): no graph break,
    nothing compiled after the first step, hidden states and gradients as the float64 model's."""
    model, reference = pair(backend)
    compile_blocks(model, backend="aot_eager")
    assert blocks_compiled(model)
    soft = build_mask("soft")
    graphs_after_first = None
    for step, alpha in enumerate([0.15, 0.4, 0.65, 0.9]):
        ids, attn = batch(step)
        model.zero_grad()
        reference.zero_grad()
        hidden = model.encode(ids, attn, mask=soft, alpha=alpha)
        want = reference.encode(ids, attn, mask=soft, alpha=alpha)
        (hidden * attn[..., None]).pow(2).sum().backward()
        (want * attn[..., None]).pow(2).sum().backward()
        real = attn.bool()
        assert (hidden.double() - want)[real].abs().max() < 1e-5, step
        for (name, a), (_, b) in zip(model.named_parameters(), reference.named_parameters()):
            if name == "lm_head.weight":  # encode() does not use the head
                assert a.grad is None and b.grad is None
                continue
            # float32 rounding relative to the gradient's scale (the loss is a sum of squares)
            err = (a.grad.double() - b.grad).abs().max() / b.grad.abs().max()
            assert err < 2e-4, (step, name, err.item())  # eager float32 is 7e-5 away too
        if step == 0:
            graphs_after_first = counters["stats"]["unique_graphs"]
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == graphs_after_first  # steady state: no recompiles


def test_flex_inference_has_no_graph_breaks_and_no_recompiles():
    model, reference = pair("flex")
    compile_blocks(model, backend="aot_eager")
    soft = build_mask("soft")
    graphs_after_first = None
    with torch.no_grad():
        for step, alpha in enumerate([0.2, 0.5, 0.8]):
            ids, attn = batch(step)
            hidden = model.encode(ids, attn, mask=soft, alpha=alpha)
            want = reference.encode(ids, attn, mask=soft, alpha=alpha)
            assert (hidden.double() - want)[attn.bool()].abs().max() < 1e-5, step
            if step == 0:
                graphs_after_first = counters["stats"]["unique_graphs"]
    assert model.model.attention_backend.last_path == "flex_eager"
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == graphs_after_first


@pytest.mark.parametrize("backend,mask_name,alpha,layout", [
    ("sdpa", "causal", 0.0, "none"), ("sdpa", "bidirectional", 0.0, "none"), ("sdpa", "soft", 0.3, "right"),
    ("sdpa", "causal", 0.0, "left"), ("eager", "soft", 0.3, "right"), ("eager", "document", 0.0, "left"),
])
def test_explain_counts_no_graph_break_per_kernel_path(backend, mask_name, alpha, layout):
    """``torch._dynamo.explain`` on one block for every kernel path and padding layout."""
    model, _ = pair(backend)
    base = model.model
    ids, attn = batch(7)
    if layout == "none":
        attn = torch.ones_like(attn)
    elif layout == "left":
        attn = attn.flip(-1)
    from conan_core.model.inputs import mask_context, position_ids_for

    segments = torch.zeros_like(ids) if mask_name == "document" else None
    ctx = mask_context(attn, *ids.shape, 0, alpha, segments, ids.device)
    cos, sin = rope_tables(position_ids_for(ctx, segments, ids.device), 16, 10000.0, torch.float32)
    plan = base.attention_backend.prepare(build_mask(mask_name), ctx, torch.float32, ids.device)
    hidden = base.embed_tokens(ids)
    explanation = torch._dynamo.explain(base.layers[0])(hidden, cos, sin, plan)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_compile_blocks_keeps_names_and_is_idempotent():
    model, _ = pair()
    keys = list(model.state_dict())
    compiled = compile_blocks(model, backend="aot_eager")
    assert compiled is model and list(model.state_dict()) == keys
    first = model.model.layers[0]._compiled_call_impl
    compile_blocks(model, backend="aot_eager")
    assert model.model.layers[0]._compiled_call_impl is first
    assert blocks_compiled(compile_blocks(model.model))
    with pytest.raises(ConanError, match="ConanModel or ConanForCausalLM"):
        compile_blocks(torch.nn.Linear(2, 2))
