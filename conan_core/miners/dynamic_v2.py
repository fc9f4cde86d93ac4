"""``dynamic_v2``: Conan-embedding-v2 dynamic hard-negative mining (RECIPE §4, the default)."""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Sequence

import torch
from pydantic import Field

from conan_core.miners.base import as_example_ids
from conan_core.miners.pooled import PoolMiner, PoolMinerConfig, window


def v2_should_replace(s0: torch.Tensor, s: torch.Tensor, *, never_hard: float = 0.4,
                      decay_ratio: float = 1.2, still_hard: float = 0.7) -> torch.Tensor:
    """RECIPE §4 v2 rule, elementwise: replace when ``S_0 < never_hard`` or
    (``decay_ratio * S_i < S_0`` and ``S_i < still_hard``).

    ``s0``, ``s``: same-shape float tensors; ``s0`` is NaN where the negative is observed for the first
    time (then ``S_0 = S_i``). Evaluated in float32 with the thresholds rounded to float32, so a
    score equal to a threshold as written (0.40, 0.70) is *not* below it: the inequalities are
    strict exactly as in the paper. Non-finite ``s`` never triggers a replacement.
    Returns a bool tensor of the same shape.
    """
    s = s.to(torch.float32)
    s0 = torch.where(torch.isnan(s0), s, s0.to(torch.float32))
    nh = torch.tensor(never_hard, dtype=torch.float32)
    dr = torch.tensor(decay_ratio, dtype=torch.float32)
    sh = torch.tensor(still_hard, dtype=torch.float32)
    return ((s0 < nh) | ((dr * s < s0) & (s < sh))) & torch.isfinite(s)


class DynamicV2Miner(PoolMiner):
    """Per-negative replacement from the scores the loss already computed (no extra forward pass).

    Each example holds ``num_negatives`` slots, filled initially from the first eligible candidates
    (pool ranks 11..17 by default: ranks 1..10 are never used, see :mod:`~conan_core.miners.pooled`).
    ``S_0`` of a slot is the first score observed after its candidate entered; at every ``observe``
    the rule of :func:`v2_should_replace` runs on each slot, and a replaced slot takes the next
    unused eligible candidate, returned by the *next* ``negatives_for`` call (RECIPE: "sampled
    from the pool at the next step"); its ``S_0`` is then its first score there.

    Exhaustion: when every eligible candidate has been used, a replaced slot takes back the
    candidate retired longest ago (which is the one just replaced when nothing else is free); each
    such pick counts in ``exhausted``. An example listed twice in one batch is decided by its first
    row; the other rows return False. Non-finite scores neither set ``S_0`` nor replace.
    """

    class Config(PoolMinerConfig):
        """Thresholds of RECIPE §4 (v2 rule) plus the shared pool fields."""

        never_hard: float = Field(0.4, ge=-1, le=1, description="replace when S_0 < this (never hard)")
        decay_ratio: float = Field(1.2, gt=0, description="replace when decay_ratio·S_i < S_0 and S_i < still_hard")
        still_hard: float = Field(0.7, ge=-1, le=1, description="... unless S_i >= this (still hard)")

    def _slots(self, eid: str) -> dict[str, Any]:
        st = self._examples.get(eid)
        if st is None:
            elig = self.eligible(eid)
            n = self.num_negatives
            active, _ = window(0, n, len(elig))
            st = {"active": active, "s0": [None] * n, "cursor": min(n, len(elig)), "retired": deque()}
            self._examples[eid] = st
        return st

    def _active(self, example_id: str) -> list[int]:
        return self._slots(example_id)["active"]

    def observe(self, example_ids: Sequence[str], neg_scores: torch.Tensor) -> torch.Tensor:
        """``neg_scores`` float [B, n] (cosines the loss computed for ``negatives_for``'s lists) ->
        bool [B, n] on the same device: True where the negative is replaced from the next step on."""
        ids = as_example_ids(example_ids)
        scores = self._check_scores(ids, neg_scores)
        self._record(scores)
        cfg = self.config
        nan = float("nan")
        first: list[bool] = []
        seen: set[str] = set()
        s0_rows = []
        for eid in ids:
            st = self._slots(eid)
            first.append(eid not in seen)
            seen.add(eid)
            s0_rows.append([nan if v is None else v for v in st["s0"]])
        s0 = torch.tensor(s0_rows, dtype=torch.float32).reshape(scores.shape)
        mask = v2_should_replace(s0, scores, never_hard=cfg.never_hard, decay_ratio=cfg.decay_ratio,
                                 still_hard=cfg.still_hard)
        if len(seen) < len(ids):
            mask &= torch.tensor(first, dtype=torch.bool).unsqueeze(1)
        # per-slot updates on python lists: cheaper than per-element tensor indexing
        replaced = 0
        for b, (eid, srow, mrow) in enumerate(zip(ids, scores.tolist(), mask.tolist())):
            if not first[b]:
                continue
            s0_row = self._examples[eid]["s0"]
            for j, (s, hit) in enumerate(zip(srow, mrow)):
                if hit:
                    self._replace(eid, j)
                    replaced += 1
                elif s0_row[j] is None and math.isfinite(s):
                    s0_row[j] = s  # S_0 of a newly entered negative = its first finite score
        if replaced:
            self._count("replaced", replaced)
        return mask.to(neg_scores.device)

    def _replace(self, eid: str, j: int) -> None:
        st = self._examples[eid]
        length = len(self.eligible(eid))
        st["retired"].append(st["active"][j])
        if st["cursor"] < length:
            new = st["cursor"]
            st["cursor"] += 1
        else:
            new = st["retired"].popleft()
            self._count("exhausted")
        st["active"][j] = new
        st["s0"][j] = None

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        for st in self._examples.values():
            st["retired"] = deque(st["retired"])
