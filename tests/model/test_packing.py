"""Packed embedding inputs (conan_core/model/packing.py): the layout, the composed mask, and the
hidden states / pooled embeddings / loss / gradients against the padded path in float64."""

import zlib

import pytest
import torch

from conan_core.masks.base import MaskContext, document_tensors
from conan_core.model import ConanModel
from conan_core.model.packing import (PackedMask, first_fit_decreasing, pack_inputs, packed_hidden,
                                      right_padded_lengths)
from conan_core.registries import REGISTRIES
from tests.model.model_reference import build_mask, tiny_config

MASKS = [("causal", {}, 0.0), ("bidirectional", {}, 0.0), ("soft", {}, 0.35), ("soft", {}, 1.0),
         ("soft", {"apply": "prob_scale", "row_scaling": "i_over_l"}, 0.8),
         ("document", {"within": "bidirectional"}, 0.0)]
MASK_IDS = [f"{n}{'_' + '_'.join(f.values()) if f else ''}-{a}" for n, f, a in MASKS]


def padded_dict(lengths, width=None, seed=0, vocab=97):
    """A right-padded input dict with rows of the given real lengths (ids 3..vocab-1, pad 0)."""
    g = torch.Generator().manual_seed(seed)
    width = width or max(max(lengths), 1)
    ids = torch.randint(3, vocab, (len(lengths), width), generator=g)
    attn = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    ids = ids.masked_fill(attn == 0, 0)
    pool = attn.clone()
    pool[:, :1] = 0  # an instruction token, left out of pooling as the collates do
    return {"input_ids": ids, "attention_mask": attn, "pool_mask": pool}


def batch_of(seed):
    """Queries (short), positives and 3 negatives per query (long), as a supervised batch has."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(2, 8, (4,), generator=g).tolist()
    p = torch.randint(5, 30, (4,), generator=g).tolist()
    n = torch.randint(3, 30, (12,), generator=g).tolist()
    return [padded_dict(q, seed=seed), padded_dict(p, seed=seed + 1), padded_dict(n, width=32, seed=seed + 2)]


def seed_of(*parts):
    return zlib.crc32("-".join(map(str, parts)).encode()) % 10_000


def test_first_fit_decreasing_fills_rows_within_the_budget():
    lengths = [5, 9, 3, 7, 2, 9, 1]
    place = first_fit_decreasing(lengths, 10)
    used: dict[int, list[tuple[int, int]]] = {}
    for (row, start), n in zip(place, lengths):
        used.setdefault(row, []).append((start, start + n))
    for spans in used.values():
        spans.sort()
        assert spans[0][0] == 0 and spans[-1][1] <= 10
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous from 0: right padding
    assert len(used) == 4  # 36 tokens need 4 rows of 10: first-fit decreasing finds that here


def test_pack_inputs_places_every_real_token_once():
    inputs = batch_of(1)
    packed = pack_inputs(inputs)
    rows, width = packed.shape
    assert width == max(int(x["attention_mask"].sum(-1).max()) for x in inputs)  # budget None = longest
    assert packed.real_tokens == sum(int(x["attention_mask"].sum()) for x in inputs)
    assert int(packed.attention_mask.sum()) == packed.real_tokens
    right_padded_lengths(packed.attention_mask)  # every packed row is right-padded
    flat = torch.cat([packed.input_ids.reshape(-1), torch.zeros(1, dtype=torch.long)])
    for x, index in zip(inputs, packed.flat_index):
        assert torch.equal(flat[index], x["input_ids"])  # gathering back gives the padded ids
    wider = pack_inputs(inputs, token_budget=4 * width)
    assert wider.shape[0] < rows and wider.shape[1] <= 4 * width
    assert packed.padded_tokens == sum(x["input_ids"].numel() for x in inputs)


def test_packing_refuses_padding_that_is_not_on_the_right():
    x = padded_dict([3, 5])
    x["attention_mask"] = x["attention_mask"].flip(-1)
    with pytest.raises(ValueError, match="right-padded"):
        pack_inputs([x])


def test_document_tensors_number_runs_of_equal_ids():
    seg = torch.tensor([[4, 4, 7, 7, 7, -1], [0, 1, 1, 2, -1, -1]])
    index, start, lengths = document_tensors(seg)
    assert index.tolist() == [[0, 0, 1, 1, 1, 2], [3, 4, 4, 5, 6, 6]]
    assert start.tolist() == [[0, 0, 2, 2, 2, 5], [0, 1, 1, 3, 4, 4]]
    assert lengths.tolist() == [2, 3, 1, 1, 2, 1, 2]


@pytest.mark.parametrize("name,fields,alpha", MASKS, ids=MASK_IDS)
def test_packed_mask_is_the_inner_mask_per_sequence(name, fields, alpha):
    inner = build_mask(name, **fields)
    inputs = batch_of(seed_of(name, alpha))
    packed = pack_inputs(inputs, token_budget=40)
    ctx = MaskContext(lengths=packed.attention_mask.sum(-1), seq_len=packed.shape[1], alpha=alpha,
                      segment_ids=packed.segment_ids)
    got = PackedMask(inner).matrix(ctx, torch.float64)
    real = packed.attention_mask.bool()
    want = torch.zeros_like(got)
    seg = packed.segment_ids
    for row in range(packed.shape[0]):
        for doc in seg[row][real[row]].unique().tolist():
            at = (seg[row] == doc).nonzero().flatten()
            n = at.numel()
            alone = inner.matrix(MaskContext(lengths=torch.tensor([n]), seq_len=n, alpha=alpha), torch.float64)[0]
            want[row, at[:, None], at[None, :]] = alone
    for row in range(packed.shape[0]):
        keep = real[row]
        torch.testing.assert_close(got[row][keep][:, keep], want[row][keep][:, keep], rtol=0, atol=1e-15)
        assert (got[row][keep][:, ~keep] == 0).all()  # padding keys stay closed
        assert (got[row][~keep][:, 0] == 1).all()  # padding rows open key 0 only (base rule)


@pytest.mark.parametrize("backend", ["sdpa", "eager", "flex"])
@pytest.mark.parametrize("name,fields,alpha", MASKS, ids=MASK_IDS)
def test_packed_hidden_states_equal_the_padded_float64_forward(backend, name, fields, alpha):
    torch.manual_seed(seed_of(backend))
    model = ConanModel(tiny_config(attention_backend=backend)).eval()
    reference = ConanModel(tiny_config(attention_backend="eager")).double().eval()
    reference.load_state_dict(model.state_dict())
    mask = build_mask(name, **fields)
    inputs = batch_of(seed_of(backend, name, alpha))
    with torch.no_grad():
        got = packed_hidden(model, inputs, mask, alpha, token_budget=48)
        for x, hidden in zip(inputs, got):
            want = reference.encode(x["input_ids"], x["attention_mask"], mask=mask, alpha=alpha)
            keep = x["attention_mask"].bool()
            assert hidden.shape == want.shape
            assert (hidden[~keep] == 0).all()
            err = (hidden[keep].double() - want[keep]).abs().max().item()
            assert err < 2e-5, err


def objective(model, mask, packing, pooler="mean"):
    from conan_core.train.objectives import EmbeddingObjective

    loss = REGISTRIES["contrastive_losses"].build({"type": "matryoshka", "loss": {"type": "info_nce"},
                                                   "dims": [16, 32]})
    sts = REGISTRIES["pair_losses"].build({"type": "cosent"})
    return EmbeddingObjective(model, REGISTRIES["poolers"].build({"type": pooler}), mask, loss, sts_loss=sts,
                              packing=packing).double()


@pytest.mark.parametrize("pooler", ["mean", "last_token"])
@pytest.mark.parametrize("name,fields,alpha", [MASKS[1], MASKS[2]], ids=[MASK_IDS[1], MASK_IDS[2]])
def test_packed_objective_gives_the_padded_loss_and_gradients(pooler, name, fields, alpha):
    from conan_core.model import ConanForCausalLM

    torch.manual_seed(0)
    base = ConanForCausalLM(tiny_config(attention_backend="sdpa"))
    q, p, n = batch_of(seed_of(pooler, name))
    s1, s2 = padded_dict([4, 9, 2], seed=7), padded_dict([6, 3, 11], seed=8)
    batch = {"query": q, "positive": p, "negative": n, "query_ids": torch.arange(4),
             "positive_ids": torch.arange(4), "negative_ids": torch.arange(12).view(4, 3) + 10,
             "example_ids": [str(i) for i in range(4)],
             "sts": {"s1": s1, "s2": s2, "scores": torch.tensor([0.1, 0.9, 0.5], dtype=torch.float64)}}
    results = []
    for packing in (False, True):
        model = ConanForCausalLM(tiny_config(attention_backend="sdpa")).double()
        model.load_state_dict(base.state_dict())
        obj = objective(model, build_mask(name, **fields), packing, pooler)
        out = obj(batch, step=0, alpha=alpha)
        out["loss"].backward()
        grads = {k: v.grad.clone() for k, v in obj.named_parameters() if v.grad is not None}
        results.append((out["loss"].item(), grads, out["observations"]["neg_scores"]))
    (loss_pad, grads_pad, neg_pad), (loss_pack, grads_pack, neg_pack) = results
    assert abs(loss_pad - loss_pack) < 1e-10 * max(1.0, abs(loss_pad))
    assert grads_pad.keys() == grads_pack.keys() and grads_pad
    for key in grads_pad:
        torch.testing.assert_close(grads_pack[key], grads_pad[key], rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(neg_pack, neg_pad, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name,fields,alpha", [MASKS[1], MASKS[2]], ids=[MASK_IDS[1], MASK_IDS[2]])
def test_packed_hidden_states_of_an_hf_backbone_equal_its_padded_forward(name, fields, alpha):
    """A transformers decoder (``hf`` backbone, random Llama) packs too: our mask and the packed
    positions reach its attention, so packed rows give its padded hidden states."""
    torch.manual_seed(0)
    decoder = REGISTRIES["backbones"].build({"type": "hf", "attn_implementation": "sdpa"}).build(97).eval()
    reference = REGISTRIES["backbones"].build({"type": "hf", "attn_implementation": "eager"}).build(97).double().eval()
    reference.load_state_dict(decoder.state_dict())
    mask = build_mask(name, **fields)
    inputs = batch_of(seed_of("hf", name))
    with torch.no_grad():
        got = packed_hidden(decoder, inputs, mask, alpha, token_budget=48)
        for x, hidden in zip(inputs, got):
            want = reference.encode(x["input_ids"], x["attention_mask"], mask=mask, alpha=alpha)
            keep = x["attention_mask"].bool()
            err = (hidden[keep].double() - want[keep]).abs().max().item()
            assert err < 2e-5, err
