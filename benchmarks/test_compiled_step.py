"""Compiled decoder blocks against eager ones: one training step of the ``small`` architecture.

Two copies of the same ``ConanForCausalLM`` (``small``: 4 layers, hidden 128) from the same weights
take the same pretraining step (forward, chunk-free cross-entropy, backward, gradient clipping,
AdamW): ``eager`` as built, ``compiled`` after :func:`conan_core.model.compile.compile_blocks`
(inductor, torchtitan style: each block compiled on its own, the mask preparation eager). Before
timing, the two losses are checked against each other and the graph breaks counted by
``torch._dynamo`` must be 0. Rounds are interleaved (``interleave.py``: ABBA, fastest of 3 steps
per round, compilation in the warm-up). ``compiled_over_eager`` is the per-round ``t_eager /
t_compiled`` (target >= 1.2). Batch 8 x 128 (``CONAN_BENCH_FULL=1``: 16 x 256).
"""

from __future__ import annotations

import os

import torch
import torch._dynamo

FULL = os.environ.get("CONAN_BENCH_FULL", "") == "1"
BATCH, LENGTH = (16, 256) if FULL else (8, 128)
ROUNDS = 8 if FULL else 10


def test_compiled_blocks_vs_eager_small(benchmark, interleave, hand_step):
    from torch._dynamo.utils import counters

    from conan_core.model import ARCHITECTURES, ConanConfig, ConanForCausalLM
    from conan_core.model.compile import compile_blocks

    config = ConanConfig(**ARCHITECTURES["small"])
    torch.manual_seed(0)
    eager = ConanForCausalLM(config).train()
    compiled = ConanForCausalLM(config).train()
    compiled.load_state_dict(eager.state_dict())
    torch._dynamo.reset()  # no compiled code left from other suites in this process
    counters.clear()
    compile_blocks(compiled)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(7, config.vocab_size, (BATCH, LENGTH), generator=gen)

    batch = {"input_ids": ids, "labels": ids}
    rows = {"eager": hand_step(eager, batch), "compiled": hand_step(compiled, batch)}
    for _ in range(2):  # also the compilation (the first compiled call)
        losses = {name: fn() for name, fn in rows.items()}
        assert abs(losses["compiled"] - losses["eager"]) < 1e-3 * max(1.0, abs(losses["eager"])), losses
    breaks = sum(counters["graph_break"].values())
    assert breaks == 0, dict(counters["graph_break"])

    rounds = benchmark.pedantic(interleave.interleave, args=(rows,),
                                kwargs={"rounds": ROUNDS, "warmup": 1, "inner": 3, "reduce": "min"},
                                rounds=1, iterations=1)
    medians = rounds.medians()
    info = benchmark.extra_info
    tokens = BATCH * LENGTH
    info.update(architecture="small", batch=[BATCH, LENGTH], graph_breaks=breaks, threads=torch.get_num_threads(),
                tokens_per_s={name: tokens / t for name, t in medians.items()}, medians_s=medians)
    stats = rounds.ratio("eager", "compiled")
    interleave.record(info, "compiled_over_eager", stats)
    print(f"\nsmall train step {BATCH}x{LENGTH}: eager {tokens / medians['eager']:.0f} tok/s, compiled "
          f"{tokens / medians['compiled']:.0f} tok/s, {breaks} graph breaks; "
          + interleave.describe("compiled_over_eager", stats))
