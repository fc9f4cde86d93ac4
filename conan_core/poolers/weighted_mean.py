"""Position-weighted mean pooling (SGPT-style), key ``weighted_mean``."""

from __future__ import annotations

import torch

from conan_core.poolers.base import Pooler, masked_mean


class WeightedMeanPooler(Pooler):
    """Weighted mean with weight ∝ k for the k-th pooled token of the row (k = 1, 2, ...).

    Under a causal mask later tokens have seen more of the text, so they count more. The rank k is
    counted among the pooled tokens only (instruction and padding tokens are skipped), so the
    weights of a row are ``k / (K (K + 1) / 2)`` for its K pooled tokens. Computed in float32.
    See :class:`Pooler` for the contract.
    """

    class Config(Pooler.Config):
        """Fields: ``normalize``, ``exclude_instruction`` (see Pooler.Config)."""

    def __init__(self, config: Config, *, hidden_size: int | None = None, **runtime):
        super().__init__(config, hidden_size=hidden_size, **runtime)

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        rank = mask.long().cumsum(1) * mask  # 1, 2, ... over pooled tokens, 0 elsewhere
        return masked_mean(hidden, rank, binary=False)
