"""``<stage>.packing: true`` trains the weak and supervised stages to the padded path's numbers."""

from __future__ import annotations

import json

import pytest
import torch

from conan_core.config import load_config
from conan_core.train.checkpoint import load_tensors
from conan_core.train.stages import run_stage
from tests.train.harness import copy_run

pytestmark = pytest.mark.slow


def step_losses(run, stage):
    return [float.fromhex(json.loads(line)["loss"]) for line in (run / stage / "steps.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("stage,keep,budget", [("weak", ("pretrain", "sft"), None),
                                               ("supervised", ("pretrain", "sft", "weak"), 96)])
def test_packed_stage_trains_like_the_padded_one(trained_run, tmp_path, stage, keep, budget):
    _, run, _ = trained_run
    # supervised: static negatives, so both runs draw the same negatives whatever rounding does
    sets = (f"{stage}.steps=5", f"{stage}.checkpoint_every=5", f"{stage}.lr=1e-4", "supervised.sts_every=2")
    if stage == "supervised":
        sets += ("supervised.miner={type: static}",)
    packed_sets = (*sets, f"{stage}.packing=true") + ((f"{stage}.pack_tokens={budget}",) if budget else ())
    padded = copy_run(run, tmp_path / "padded", keep, (*sets, f"{stage}.packing=false"))
    packed = copy_run(run, tmp_path / "packed", keep, packed_sets)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_stage(load_config(padded / "config.yaml"), stage, padded, progress=False)
        run_stage(load_config(packed / "config.yaml"), stage, packed, progress=False)
    finally:
        torch.set_num_threads(threads)
    a, b = step_losses(padded, stage), step_losses(packed, stage)
    assert len(a) == len(b) == 5
    for x, y in zip(a, b):
        assert abs(x - y) < 1e-4 * max(1.0, abs(x)), (a, b)
    wa = load_tensors(padded / stage / "final" / "model.safetensors")
    wb = load_tensors(packed / stage / "final" / "model.safetensors")
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-5)
