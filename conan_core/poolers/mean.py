"""Masked mean pooling (the default pooler), key ``mean``."""

from __future__ import annotations

import torch

from conan_core.poolers.base import Pooler, masked_mean


class MeanPooler(Pooler):
    """Average of the hidden states of the pooled tokens (see :class:`Pooler` for the contract)."""

    class Config(Pooler.Config):
        """Fields: ``normalize``, ``exclude_instruction`` (see Pooler.Config)."""

    def __init__(self, config: Config, *, hidden_size: int | None = None, **runtime):
        super().__init__(config, hidden_size=hidden_size, **runtime)

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_mean(hidden, mask, binary=True)
