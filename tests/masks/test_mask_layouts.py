"""Mask rules under any padding layout (left padding, holes) and with fewer queries than keys (KV
cache): the real tokens see exactly the mask of the unpadded sequence."""

import pytest
import torch

from conan_core.masks.base import MaskContext
from conan_core.registries import REGISTRIES

MASKS = {
    "causal": ({"type": "causal"}, 0.0),
    "bidirectional": ({"type": "bidirectional"}, 0.0),
    "soft": ({"type": "soft"}, 0.37),
    "soft_i_over_l": ({"type": "soft", "row_scaling": "i_over_l"}, 0.6),
    "document": ({"type": "document"}, 0.0),
    "document_bidirectional": ({"type": "document", "within": "bidirectional"}, 0.0),
}


def random_layout(seed: int, batch: int = 4, seq_len: int = 9):
    """A bool [B, L] mask with left padding, holes and one empty row, and segment ids [B, L]."""
    g = torch.Generator().manual_seed(seed)
    valid = torch.rand(batch, seq_len, generator=g) < 0.7
    valid[0, :3] = False  # left padding
    valid[0, 3:] = True
    valid[1, 0] = True
    valid[-1] = False  # no real token at all
    segments = torch.cumsum((torch.rand(batch, seq_len, generator=g) < 0.3).long(), dim=1)
    return valid, segments


@pytest.mark.parametrize("name", list(MASKS))
@pytest.mark.parametrize("seed", [0, 1])
def test_real_tokens_see_the_unpadded_mask(name, seed):
    spec, alpha = MASKS[name]
    mask = REGISTRIES["masks"].build(spec)
    valid, segments = random_layout(seed)
    lengths = valid.sum(-1)
    ctx = MaskContext(lengths, valid.shape[1], alpha=alpha, segment_ids=segments, valid=valid)
    m = mask.matrix(ctx, torch.float64)
    for b in range(valid.shape[0]):
        real = valid[b].nonzero().flatten()
        n = len(real)
        pad = (~valid[b]).nonzero().flatten()
        if n:
            # the same row alone, compacted and unpadded (segment ids of the real tokens only)
            alone = MaskContext(torch.tensor([n]), n, alpha=alpha, segment_ids=segments[b, real][None])
            expected = mask.matrix(alone, torch.float64)[0]
            assert torch.equal(m[b][real][:, real], expected), (name, b)
        assert torch.all(m[b][:, pad] == 0) or not n  # padding keys closed for every real row
        first = int(real[0]) if n else 0
        for i in pad.tolist():  # padding rows attend to the first real key only
            row = torch.zeros(valid.shape[1], dtype=torch.float64)
            row[first] = 1.0
            assert torch.equal(m[b, i], row), (name, b, i)


def test_right_padding_given_as_valid_equals_the_lengths_rule():
    """A right-padded bool mask passed as ``valid`` gives the lengths-only (fast path) matrix."""
    lengths = torch.tensor([7, 4, 1, 0])
    valid = torch.arange(7)[None] < lengths[:, None]
    for name, (spec, alpha) in MASKS.items():
        mask = REGISTRIES["masks"].build(spec)
        fast = mask.matrix(MaskContext(lengths, 7, alpha=alpha), torch.float64)
        general = mask.matrix(MaskContext(lengths, 7, alpha=alpha, valid=valid), torch.float64)
        assert torch.equal(fast, general), name


@pytest.mark.parametrize("layout", ["right", "any"])
def test_queries_after_cached_keys_are_the_last_rows(layout):
    """kv_len > seq_len: the queries are the last seq_len positions of the full matrix."""
    causal = REGISTRIES["masks"].build({"type": "causal"})
    valid, _ = random_layout(3, seq_len=8)
    lengths = valid.sum(-1) if layout == "any" else torch.tensor([8, 6, 3, 8])
    kwargs = {"valid": valid} if layout == "any" else {}
    full = causal.matrix(MaskContext(lengths, 8, **kwargs))
    tail = causal.matrix(MaskContext(lengths, 3, kv_len=8, **kwargs))
    assert tail.shape == (4, 3, 8)
    assert torch.equal(tail, full[:, -3:])


def test_cache_conditions_and_exact_kinds():
    ctx = MaskContext(torch.tensor([5, 5]), 2, kv_len=5)
    build = lambda spec: REGISTRIES["masks"].build(spec)
    assert build({"type": "causal"}).is_causal(ctx)
    assert build({"type": "document"}).is_causal(ctx)
    assert not build({"type": "document", "within": "bidirectional"}).is_causal(ctx)
    assert not build({"type": "bidirectional"}).is_causal(ctx)
    assert build({"type": "soft"}).is_causal(ctx)  # alpha 0
    assert not build({"type": "soft"}).is_causal(MaskContext(torch.tensor([5, 5]), 2, alpha=0.1, kv_len=5))
    # SDPA's is_causal has no query offset: no exact causal kind with cached keys
    assert build({"type": "causal"}).exact_kind(ctx) is None
    assert build({"type": "bidirectional"}).exact_kind(ctx) == "bidirectional"


def test_context_validation_of_the_new_fields():
    with pytest.raises(ValueError, match="kv_len"):
        MaskContext(torch.tensor([3]), 4, kv_len=3)
    with pytest.raises(ValueError, match="valid"):
        MaskContext(torch.tensor([3]), 4, valid=torch.ones(1, 4))  # not bool
    with pytest.raises(ValueError, match="segment_ids"):
        MaskContext(torch.tensor([3]), 2, kv_len=4, segment_ids=torch.zeros(1, 2, dtype=torch.long))
    assert MaskContext(torch.tensor([3]), 2, kv_len=4).q_offset == 2
