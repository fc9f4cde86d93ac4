"""The trainer's pretraining step against hand-written loops, measured in the same run.

Three ways to take the same optimizer step on the same batch, from the same weights:

* ``trainer``: :meth:`conan_core.train.loop.Trainer.train_step` on a
  :class:`~conan_core.train.objectives.CausalLMObjective` (``ConanForCausalLM`` hidden states +
  the chunked ``causal_lm`` loss) with everything the loop does per step: LR schedule, gradient
  clipping, the non-finite guard and its (single-process) all-reduce, optimizer step;
* ``hand``: a plain loop on the same model: ``model(ids, labels=...)`` (full logits + cross-entropy),
  backward, clip, step;
* ``llama``: the same plain loop on transformers' ``LlamaForCausalLM`` with the identical config and
  weights (the anchor).

Every row uses the same optimizer (the ``adamw`` factory, lr 1e-3 constant, weight decay 0.001).
Before timing, the trainer's loss is checked against a float64 reference of the same model and
against the anchor. Sizes: the ``tiny`` architecture, batch 8 x 128 (``CONAN_BENCH_FULL=1``: the
``small`` architecture, 16 x 256). The three rows are timed in interleaved rounds
(``interleave.py``: ABBA order, the fastest of 3 steps per round, warm-up excluded); stored in
``benchmark.extra_info``: median tokens/s of each row and ``ratio_vs_llama`` / ``ratio_vs_hand``
(trainer rate / anchor rate, i.e. per-round ``t_anchor / t_trainer``, median and spread; target
>= 1.0).
"""

from __future__ import annotations

import os

import torch

from conan_core.model import ARCHITECTURES, ConanConfig, ConanForCausalLM
from conan_core.model.llama import to_llama_config
from conan_core.registries import REGISTRIES

FULL = os.environ.get("CONAN_BENCH_FULL", "") == "1"
ARCH = ARCHITECTURES["small" if FULL else "tiny"]
BATCH, LENGTH = (16, 256) if FULL else (8, 128)
ROUNDS = 10 if FULL else 12


class SameBatch:
    """A trainer stream that returns one fixed batch (no data cost in the timing)."""

    def __init__(self, batch: dict):
        self.batch = batch

    def next_batch(self) -> dict:
        return self.batch

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None

    def counters(self) -> dict:
        return {}


def make_batch() -> dict:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(7, ARCH["vocab_size"], (BATCH, LENGTH), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone(),
            "keys": [], "tokens": BATCH * LENGTH}


def test_trainer_step_vs_hand_loops(benchmark, interleave, tmp_path, hand_step):
    from conan_core.config import StageConfig
    from conan_core.train.loop import RunFlags, Trainer
    from conan_core.train.objectives import CausalLMObjective

    batch = make_batch()
    torch.manual_seed(0)
    config = ConanConfig(**ARCH)
    ours = ConanForCausalLM(config).train()
    hand = ConanForCausalLM(config).train()
    hand.load_state_dict(ours.state_dict())
    llama = __import__("transformers").LlamaForCausalLM(to_llama_config(config, attn_implementation="sdpa")).train()
    llama.load_state_dict(ours.state_dict(), strict=True)

    # correctness first: the trainer's loss on the untouched weights vs float64 and vs the anchor
    objective = CausalLMObjective(ours, REGISTRIES["masks"].build({"type": "causal"}),
                                  REGISTRIES["lm_losses"].build({"type": "causal_lm"}))
    ref = ConanForCausalLM(config).double()
    ref.load_state_dict(ours.state_dict())
    with torch.no_grad():
        want = ref(input_ids=batch["input_ids"], labels=batch["labels"]).loss.item()
        got = objective(batch, step=1, alpha=0.0)["loss"].item()
        anchor = llama(input_ids=batch["input_ids"], labels=batch["labels"]).loss.item()
    assert abs(got - want) < 1e-4 * max(1.0, abs(want)), (got, want)
    assert abs(anchor - want) < 1e-4 * max(1.0, abs(want)), (anchor, want)

    steps = 3 * 3 * ROUNDS + 10  # the trainer's LR schedule must cover every step taken here
    settings = StageConfig(steps=steps, lr=1e-3, warmup_ratio=0.0, lr_decay="constant", weight_decay=0.001,
                           max_grad_norm=1.0, checkpoint_every=steps)
    trainer = Trainer(objective, SameBatch(batch), settings, tmp_path / "bench", name="bench",
                      optimizer=REGISTRIES["optimizers"].build("adamw"), precision="fp32",
                      flags=RunFlags(progress=False, resume=False))
    counter = iter(range(1, steps + 1))
    rows = {"trainer": lambda: trainer.train_step(next(counter)).loss,
            "hand": hand_step(hand, batch),
            "llama": hand_step(llama, batch)}
    # the same function: equal losses on the first two steps (same weights, same optimizer)
    for _ in range(2):
        losses = {name: fn() for name, fn in rows.items()}
        assert abs(losses["trainer"] - losses["llama"]) < 1e-3 * max(1.0, abs(losses["llama"])), losses
        assert abs(losses["trainer"] - losses["hand"]) < 1e-3 * max(1.0, abs(losses["hand"])), losses

    rounds = benchmark.pedantic(interleave.interleave, args=(rows,),
                                kwargs={"rounds": ROUNDS, "warmup": 0, "inner": 3, "reduce": "min"},
                                rounds=1, iterations=1)  # the two checked steps above were the warm-up
    tokens = BATCH * LENGTH
    medians = rounds.medians()
    info = benchmark.extra_info
    info.update(architecture="small" if FULL else "tiny", batch=[BATCH, LENGTH], threads=torch.get_num_threads(),
                tokens_per_s={name: tokens / t for name, t in medians.items()}, medians_s=medians)
    stats = {"ratio_vs_llama": rounds.ratio("llama", "trainer"), "ratio_vs_hand": rounds.ratio("hand", "trainer")}
    for key, value in stats.items():
        interleave.record(info, key, value)
    print(f"\ntrain step {BATCH}x{LENGTH}: trainer {tokens / medians['trainer']:.0f} tok/s, hand "
          f"{tokens / medians['hand']:.0f}, llama {tokens / medians['llama']:.0f}; "
          + "; ".join(interleave.describe(k, v) for k, v in stats.items()))
