"""CoSENT ranking loss for STS pairs (RECIPE §5), key ``cosent``."""

from __future__ import annotations

import torch
from pydantic import Field

from conan_core.losses.base import (
    LossInputError,
    LossOutput,
    PairLoss,
    check_embeddings,
    compute_dtype,
    full_precision,
    unit,
)
from conan_core.registry import ComponentConfig


class CoSENTLoss(PairLoss):
    """``log(1 + sum over pairs (i, j) with gold_i > gold_j of exp((cos_j - cos_i) / tau))``.

    ``forward(e1 [B, H], e2 [B, H], scores [B]) -> LossOutput``: ``cos_i = cos(e1_i, e2_i)``;
    ``scores`` are the gold similarities (any real scale: only their order matters). Computed as a
    log-sum-exp over ``[0] + terms`` (stable at any tau; no pair ordered -> loss 0) in float32
    (float64 for float64 inputs) with autocast off. ``neg_scores`` is None. Metrics: ``pairs`` (the
    number of ordered pairs).
    """

    class Config(ComponentConfig):
        tau: float = Field(0.05, gt=0, description="temperature of the pair differences (0.05 = CoSENT's scale 20)")

    def __init__(self, config: Config, **runtime):
        super().__init__(config, **runtime)

    def forward(self, e1: torch.Tensor, e2: torch.Tensor, scores: torch.Tensor) -> LossOutput:
        check_embeddings("e1", e1, 2)
        check_embeddings("e2", e2, 2, e1.shape[0], e1.shape[1])
        if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (e1.shape[0],):
            got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
            raise LossInputError(f"scores: expected shape ({e1.shape[0]},) (one gold score per pair), got {got}")
        dtype = compute_dtype(e1, e2)
        with full_precision(e1.device):
            cos = (unit(e1, dtype) * unit(e2, dtype)).sum(-1)
            gold = scores.to(device=cos.device, dtype=dtype)
            # diff[i, j] = (cos_j - cos_i) / tau, kept where gold_i > gold_j
            diff = (cos[None, :] - cos[:, None]) / self.config.tau
            ordered = gold[:, None] > gold[None, :]
            terms = diff.masked_fill(~ordered, float("-inf")).reshape(-1)
            loss = torch.logsumexp(torch.cat([cos.new_zeros(1), terms]), 0)
            pairs = ordered.sum().item()
        return LossOutput(loss=loss, neg_scores=None, metrics={"pairs": float(pairs)})
