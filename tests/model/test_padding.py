"""Left padding and attention masks with holes: every real token's hidden state equals the float64
run of its row with the padding removed, for every mask type and backend; right padding keeps
its fast path."""

import zlib

import pytest
import torch

from conan_core.errors import ConanError
from conan_core.model import ConanModel
from conan_core.model.inputs import mask_context, padding_layout, position_ids_for
from conan_core.model.rope import positions_from_segments
from tests.model.model_reference import build_mask, tiny_config

MASKS = [("causal", {}, 0.0), ("bidirectional", {}, 0.0), ("soft", {}, 0.35),
         ("soft", {"apply": "prob_scale", "row_scaling": "i_over_l"}, 0.8), ("document", {}, 0.0),
         ("document", {"within": "bidirectional"}, 0.0)]


def layout(seed, batch=4, seq_len=9):
    """Token ids, a 0/1 mask with left padding / holes / a fully padded row, and segment ids."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 97, (batch, seq_len), generator=g)
    attn = (torch.rand(batch, seq_len, generator=g) < 0.7).long()
    attn[0, :3], attn[0, 3:] = 0, 1  # plain left padding
    attn[1, 0] = 1
    attn[3] = 0  # no real token
    segments = torch.cumsum((torch.rand(batch, seq_len, generator=g) < 0.3).long(), dim=1)
    return ids, attn, segments


def zlib_seed(*parts):
    return zlib.crc32("-".join(parts).encode()) % 10_000


@pytest.mark.parametrize("backend", ["sdpa", "eager", "flex"])
@pytest.mark.parametrize("name,fields,alpha", MASKS, ids=[f"{n}{'_' + '_'.join(f.values()) if f else ''}"
                                                          for n, f, _ in MASKS])
def test_any_padding_equals_the_unpadded_float64_rows(backend, name, fields, alpha):
    torch.manual_seed(0)
    model = ConanModel(tiny_config(attention_backend=backend)).eval()
    reference = ConanModel(tiny_config(attention_backend="eager")).double().eval()
    reference.load_state_dict(model.state_dict())
    mask = build_mask(name, **fields)
    ids, attn, segments = layout(zlib_seed(backend, name))
    seg = segments if name == "document" else None
    with torch.no_grad():
        out = model.encode(ids, attn, mask=mask, alpha=alpha, segment_ids=seg)
        assert torch.isfinite(out).all()
        for row in range(ids.shape[0]):
            keep = attn[row].bool()
            if not keep.any():
                continue
            row_seg = seg[row:row + 1, keep] if seg is not None else None
            alone = reference.encode(ids[row:row + 1, keep], mask=mask, alpha=alpha, segment_ids=row_seg)
            err = (out[row, keep].double() - alone[0]).abs().max().item()
            assert err < 2e-5, (row, err)


def test_any_padding_gradients_never_reach_padding_tokens():
    torch.manual_seed(1)
    model = ConanModel(tiny_config())
    ids, attn, _ = layout(5)
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_()
    out = model(inputs_embeds=embeds, attention_mask=attn, mask=build_mask("soft"), alpha=0.5).last_hidden_state
    (out * attn[..., None]).sum().backward()  # a loss that reads real tokens only
    pad = attn == 0
    assert torch.all(embeds.grad[pad] == 0) and torch.any(embeds.grad[~pad] != 0)


def test_right_padding_keeps_the_fast_path():
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    lengths, valid = padding_layout(right, 3, 4, torch.device("cpu"))
    assert valid is None and lengths.tolist() == [3, 4, 0]
    ctx = mask_context(right, 3, 4, 0, 0.0, None, torch.device("cpu"))
    assert torch.equal(position_ids_for(ctx, None, torch.device("cpu")), torch.arange(4).expand(3, 4))
    lengths, valid = padding_layout(right.flip(-1), 3, 4, torch.device("cpu"))
    assert valid is not None and lengths.tolist() == [3, 4, 0]
    lengths, valid = padding_layout(right.bool(), 3, 4, torch.device("cpu"))
    assert valid is None
    with pytest.raises(ConanError, match="only 0"):
        padding_layout(right.float() * 0.5, 3, 4, torch.device("cpu"))
    with pytest.raises(ConanError, match="4-D"):
        padding_layout(right[:, None, None], 3, 4, torch.device("cpu"))


def test_right_padded_rows_give_the_same_numbers_with_or_without_the_mask():
    """The fast path is bit-stable: a batch without padding gives the same result whether its
    all-ones mask is passed or not, and a right-padded row equals its general-path value."""
    torch.manual_seed(2)
    model = ConanModel(tiny_config()).eval()
    ids, _, _ = layout(6)
    ones = torch.ones_like(ids)
    with torch.no_grad():
        assert torch.equal(model.encode(ids, ones), model.encode(ids))
        right = ones.clone()
        right[1, 6:] = 0
        holes = right.clone()
        holes[1, 0] = 0  # forces the general path for the whole batch
        fast = model.encode(ids, right, mask=build_mask("soft"), alpha=0.4)
        general = model.encode(ids, holes, mask=build_mask("soft"), alpha=0.4)
    assert torch.allclose(fast[0], general[0], atol=1e-6)


def test_positions_from_segments_skip_padding():
    segments = torch.tensor([[7, 7, 0, 0, 1, 1, 1, 5, 2, 2]])
    valid = torch.tensor([[0, 0, 1, 1, 1, 0, 1, 0, 1, 1]]).bool()
    # real tokens: segment 0 at 2,3; segment 1 at 4,6 (a hole at 5); segment 2 at 8,9
    expected = torch.tensor([[0, 0, 0, 1, 0, 0, 1, 0, 0, 1]])
    assert torch.equal(positions_from_segments(segments, valid), expected)
    full = torch.ones_like(valid)
    assert torch.equal(positions_from_segments(segments, full), positions_from_segments(segments))
