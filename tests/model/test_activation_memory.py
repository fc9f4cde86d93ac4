"""The activation-memory formula (conan_core.model.activation_memory) against what autograd really
keeps: every tensor saved for backward during a forward, counted once per storage (parameters
excluded), on fresh random inputs of a small GQA config, fp32 and bf16 autocast, with and without
a dense soft-mask bias and activation checkpointing."""

from __future__ import annotations

import pytest
import torch

from conan_core.errors import ConanError
from conan_core.model.activation_memory import activation_plan, block_bytes_per_token

ARCH = {"hidden_size": 48, "intermediate_size": 136, "num_hidden_layers": 3, "num_attention_heads": 6,
        "num_key_value_heads": 2, "head_dim": 8, "vocab_size": 211}


def saved_bytes(batch: int, length: int, dtype: str, *, mask: dict | None = None, checkpointing: bool = False,
                checkpoint_every: int = 1) -> int:
    """Bytes of the distinct storages autograd saves in one training forward of ConanModel."""
    from conan_core.model import ConanModel
    from conan_core.model.configuration import ConanConfig
    from conan_core.registries import REGISTRIES

    from conan_core.backbones.conan import enable_checkpointing

    model = ConanModel(ConanConfig(**ARCH, attn_implementation="sdpa"))
    model.train()
    if checkpointing:
        enable_checkpointing(model, every_n_layers=checkpoint_every)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    ids = torch.randint(0, ARCH["vocab_size"], (batch, length))
    extra = {} if mask is None else {"mask": REGISTRIES["masks"].build(mask), "alpha": 0.5}
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        out = model(input_ids=ids, **extra).last_hidden_state
    assert out.requires_grad
    return sum(seen.values())


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("batch,length", [(2, 24), (3, 40)])
def test_saved_bytes_match_the_formula(dtype, batch, length):
    plan = activation_plan(ARCH, batch, length, dtype)
    assert saved_bytes(batch, length, dtype) == plan["saved"] == plan["peak"]


def test_a_dense_soft_mask_bias_adds_one_l_by_l_per_sequence_not_per_block():
    plan = activation_plan(ARCH, 2, 32, "fp32", dense_bias=True)
    assert saved_bytes(2, 32, "fp32", mask={"type": "soft"}) == plan["saved"]
    assert plan["saved"] - activation_plan(ARCH, 2, 32, "fp32")["saved"] == 2 * 32 * 32 * 4


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_checkpointing_keeps_each_blocks_input_and_peaks_one_block_higher(dtype):
    plan = activation_plan(ARCH, 2, 32, dtype, checkpointing=True)
    assert saved_bytes(2, 32, dtype, checkpointing=True) == plan["saved"]
    full = activation_plan(ARCH, 2, 32, dtype)
    assert plan["saved"] < full["saved"] and plan["peak"] < full["peak"]
    assert plan["peak"] - plan["saved"] == plan["per_block"] + full["weight_copies"] // ARCH["num_hidden_layers"]


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_checkpoint_every_second_block(dtype):
    """3 blocks, checkpoint_every 2: blocks 0 and 2 recompute, block 1 keeps its activations."""
    plan = activation_plan(ARCH, 2, 32, dtype, checkpointing=True, checkpoint_every=2)
    assert plan["checkpointed_blocks"] == 2
    assert saved_bytes(2, 32, dtype, checkpointing=True, checkpoint_every=2) == plan["saved"]
    every = activation_plan(ARCH, 2, 32, dtype, checkpointing=True)
    assert every["saved"] < plan["saved"] < activation_plan(ARCH, 2, 32, dtype)["saved"]


def test_scales_with_tokens_and_rejects_bad_input():
    one, two = activation_plan(ARCH, 1, 64, "bf16"), activation_plan(ARCH, 2, 64, "bf16")
    assert two["per_block"] == 2 * one["per_block"] == 2 * 64 * block_bytes_per_token(ARCH, "bf16")
    assert two["weight_copies"] == one["weight_copies"] > 0 == activation_plan(ARCH, 1, 64, "fp32")["weight_copies"]
    with pytest.raises(ConanError, match="dtype"):
        activation_plan(ARCH, 1, 8, "fp16")
    with pytest.raises(ConanError, match="batch and seq_len"):
        activation_plan(ARCH, 0, 8)
