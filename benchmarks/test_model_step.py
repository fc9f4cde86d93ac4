"""A training step (forward + backward + AdamW) of ConanForCausalLM against transformers'
LlamaForCausalLM with the identical config and weights, on the same batch, in the same run.

Sizes: the ``tiny`` architecture, batch 8 x 128 tokens; ``CONAN_BENCH_FULL=1``: the ``small``
architecture, batch 16 x 256. Both models start from the same weights and the test first checks
that their losses and updated weights agree, then times the two steps in interleaved rounds
(``interleave.py``: ABBA order, the fastest of 3 steps per round, warm-up excluded) and stores
``ratio`` = conan tokens/s over llama tokens/s, i.e. the per-round ``t_llama / t_conan`` (median
and spread; target >= 1.0) in ``benchmark.extra_info``.
``batch`` = "full" (no padding: both take SDPA's causal kernel) or "padded" (a quarter of the
tokens are right padding: both pass a mask to SDPA).
"""

from __future__ import annotations

import os

import pytest
import torch

from conan_core.model import ARCHITECTURES, ConanConfig, ConanForCausalLM
from conan_core.model.llama import to_llama_config

FULL = os.environ.get("CONAN_BENCH_FULL", "") == "1"
ARCH = ARCHITECTURES["small" if FULL else "tiny"]
BATCH, LENGTH = (16, 256) if FULL else (8, 128)
# the full batch is guarded in CI; the padded one is for reference
ROUNDS = {"full": 10 if FULL else 12, "padded": 6}


def make_batch(padded: bool):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, ARCH["vocab_size"], (BATCH, LENGTH), generator=gen)
    attn = torch.ones_like(ids)
    if padded:
        lengths = torch.randint(LENGTH // 2, LENGTH + 1, (BATCH,), generator=gen)
        lengths[0] = LENGTH
        attn = (torch.arange(LENGTH)[None] < lengths[:, None]).long()
    labels = ids.masked_fill(attn == 0, -100)
    return ids, attn, labels


def make_models():
    torch.manual_seed(0)
    config = ConanConfig(**ARCH)
    conan = ConanForCausalLM(config).train()
    llama_cls = __import__("transformers").LlamaForCausalLM
    llama = llama_cls(to_llama_config(config, attn_implementation="sdpa")).train()
    llama.load_state_dict(conan.state_dict(), strict=True)
    return conan, llama


def make_step(model, batch):
    ids, attn, labels = batch
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.001)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        loss.backward()
        opt.step()
        return loss.detach()

    return step


@pytest.mark.parametrize("batch_kind", ["full", "padded"])
def test_training_step_vs_llama(benchmark, interleave, batch_kind):
    batch = make_batch(batch_kind == "padded")
    tokens = int(batch[1].sum())
    conan, llama = make_models()
    steps = {"conan": make_step(conan, batch), "llama": make_step(llama, batch)}

    # same function: equal losses on two steps and equal weights after them
    for _ in range(2):
        a, b = steps["conan"](), steps["llama"]()
        assert abs(a.item() - b.item()) < 1e-4 * max(1.0, abs(b.item())), (a.item(), b.item())
    theirs = dict(llama.named_parameters())
    for name, p in conan.named_parameters():
        assert torch.allclose(p, theirs[name], atol=1e-4), name

    rounds = benchmark.pedantic(interleave.interleave, args=(steps,),
                                kwargs={"rounds": ROUNDS[batch_kind], "inner": 3, "reduce": "min"},
                                rounds=1, iterations=1)
    info = benchmark.extra_info
    medians = rounds.medians()
    info.update(batch=[BATCH, LENGTH], batch_kind=batch_kind, real_tokens=tokens,
                architecture="small" if FULL else "tiny", medians_s=medians,
                tokens_per_s_conan=tokens / medians["conan"], tokens_per_s_llama=tokens / medians["llama"],
                threads=torch.get_num_threads())
    stats = rounds.ratio("llama", "conan")
    interleave.record(info, "ratio", stats)
    print(f"\nmodel step {batch_kind} {BATCH}x{LENGTH}: conan {tokens / medians['conan']:.0f} tok/s, "
          f"llama {tokens / medians['llama']:.0f} tok/s; {interleave.describe('ratio', stats)}")
