"""plot_miner_stats draws a real PNG from a miner's stats history."""

from __future__ import annotations

import pytest
import torch

from conan_core.miners.plot import plot_miner_stats
from conan_core.miners.pool import CandidatePool
from conan_core.registries import REGISTRIES


def test_plot_from_a_dynamic_run(tmp_path):
    miner = REGISTRIES["miners"].build({"type": "dynamic_v2"}, pool=CandidatePool.toy(num_examples=4))
    gen = torch.Generator().manual_seed(0)
    history = []
    for step in range(12):
        ids = [f"ex{step % 4}", f"ex{(step + 1) % 4}"]
        miner.negatives_for(ids)
        miner.observe(ids, torch.rand(2, 7, generator=gen))
        history.append({"step": step, **miner.stats()})
        miner.reset_step_stats()
    assert sum(h["replaced_step"] for h in history) == history[-1]["replaced_total"] > 0
    out = plot_miner_stats(history, tmp_path / "miner.png")
    data = (tmp_path / "miner.png").read_bytes()
    assert out.endswith("miner.png") and data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    with pytest.raises(ValueError, match="empty"):
        plot_miner_stats([], tmp_path / "x.png")
