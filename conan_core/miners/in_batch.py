"""``in_batch``: no hard negatives at all (in-batch negatives only), for ablations."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from conan_core.miners.base import Miner, as_example_ids
from conan_core.registry import ComponentConfig


class InBatchMiner(Miner):
    """``negatives_for`` returns an empty list per example and ``observe`` an empty bool [B, 0]
    tensor; the loss then contrasts each query with the other examples' positives only.
    The pool, if given, is ignored. Its state is the number of ``observe`` calls."""

    needs_pool = False

    class Config(ComponentConfig):
        """No fields: there is nothing to choose."""

    def __init__(self, config: ComponentConfig, *, pool: Any = None, **runtime: Any):
        super().__init__(config, pool=pool, seed=runtime.get("seed", 0))
        self.num_negatives = 0  # whatever the stage asks: in-batch negatives only
        self._calls_total = 0
        self._calls_step = 0

    def negatives_for(self, example_ids: Sequence[str]) -> list[list]:
        return [[] for _ in as_example_ids(example_ids)]

    def observe(self, example_ids: Sequence[str], neg_scores: torch.Tensor) -> torch.Tensor:
        """``neg_scores`` [B, 0] (or None) -> bool [B, 0]."""
        batch = len(as_example_ids(example_ids))
        if neg_scores is not None and tuple(neg_scores.shape) != (batch, 0):
            raise ValueError(f"in_batch miner has no hard negatives: neg_scores must be [B={batch}, 0] "
                             f"(got {tuple(neg_scores.shape)})")
        device = neg_scores.device if neg_scores is not None else "cpu"
        self._calls_total += 1
        self._calls_step += 1
        return torch.zeros((batch, 0), dtype=torch.bool, device=device)

    def stats(self) -> dict[str, Any]:
        return {"observe_calls_step": self._calls_step, "observe_calls_total": self._calls_total,
                "replaced_step": 0, "replaced_total": 0}

    def reset_step_stats(self) -> None:
        self._calls_step = 0

    def state_dict(self) -> dict[str, Any]:
        return {"observe_calls_total": self._calls_total, "observe_calls_step": self._calls_step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._calls_total = int(state["observe_calls_total"])
        self._calls_step = int(state["observe_calls_step"])
