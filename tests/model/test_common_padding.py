"""transformers' common padding checks (GenerationTesterMixin's left-padding test, masks with
holes, eager / SDPA / Flex agreement), rewritten for ConanModel / ConanForCausalLM with
transformers' Llama of the same architecture as the control. One that Llama itself fails is
marked there with the reason."""

import pytest
import torch

from tests.model.families import BATCH, FAMILIES, inputs, positions_from


@pytest.fixture(params=list(FAMILIES))
def family(request):
    return FAMILIES[request.param]


@pytest.mark.parametrize("explicit_positions", [True, False], ids=["positions_given", "positions_derived"])
def test_left_padding_compatibility(family, explicit_positions):
    """The last token's logits do not depend on left padding (positions from the mask, as
    generate() passes them)."""
    if family.name == "llama" and not explicit_positions:
        pytest.xfail("Llama's forward numbers positions 0..L-1 whatever the mask (only generate() "
                     "derives them from it); Conan derives them from the mask itself")
    model = family.model("lm")
    ids, _ = inputs()
    pad = 3
    padded_ids = torch.cat([torch.zeros(BATCH, pad, dtype=torch.long), ids], 1)
    padded_mask = torch.cat([torch.zeros(BATCH, pad, dtype=torch.long), torch.ones_like(ids)], 1)
    kwargs = {"position_ids": positions_from(padded_mask)} if explicit_positions else {}
    with torch.no_grad():
        plain = model(ids).logits[:, -1]
        padded = model(padded_ids, attention_mask=padded_mask, **kwargs).logits[:, -1]
    assert (plain - padded).abs().max() < 1e-5


@pytest.mark.parametrize("explicit_positions", [True, False], ids=["positions_given", "positions_derived"])
def test_attention_mask_with_holes(family, explicit_positions):
    """Padding in the middle of a row: each real token's hidden state equals that of the row with
    the padding removed."""
    if family.name == "llama" and not explicit_positions:
        pytest.xfail("Llama's forward numbers positions 0..L-1 whatever the mask; Conan derives "
                     "them from the mask")
    model = family.model("base")
    ids, _ = inputs()
    holes = torch.ones_like(ids)
    holes[0, 2] = holes[1, 1:3] = holes[2, 0] = holes[3, 4] = 0
    kwargs = {"position_ids": positions_from(holes)} if explicit_positions else {}
    with torch.no_grad():
        out = model(ids, attention_mask=holes, **kwargs).last_hidden_state
        for row in range(BATCH):
            keep = holes[row].bool()
            alone = model(ids[row:row + 1, keep]).last_hidden_state[0]
            assert (out[row, keep] - alone).abs().max() < 1e-5, row


@pytest.mark.parametrize("padding", ["right", "left"])
def test_eager_sdpa_flex_agree(family, padding):
    ids, attn = inputs(padding=padding)
    logits = {}
    # Llama's flex path compiles its mask builder on first use (~10 s on this CPU): its flex run is
    # checked once, in test_common_outputs.py
    impls = ("eager", "sdpa", "flex_attention") if family.name == "conan" else ("eager", "sdpa")
    for impl in impls:
        model = family.model("lm", attn_implementation=impl)
        with torch.no_grad():
            logits[impl] = model(ids, attention_mask=attn, position_ids=positions_from(attn)).logits
    real = attn.bool()
    for impl in impls[1:]:
        assert (logits[impl][real] - logits["eager"][real]).abs().max() < 1e-5, impl
