"""First-token pooling (CLS-style), key ``first_token``."""

from __future__ import annotations

import torch

from conan_core.poolers.base import Pooler, pick_token


class FirstTokenPooler(Pooler):
    """Hidden state of the first pooled token of each row (see :class:`Pooler` for the contract).

    With ``exclude_instruction`` this is the first token after the instruction. Under a causal
    mask the first token sees nothing else: use it with a bidirectional (stage 4) mask.
    """

    class Config(Pooler.Config):
        """Fields: ``normalize``, ``exclude_instruction`` (see Pooler.Config)."""

    def __init__(self, config: Config, *, hidden_size: int | None = None, **runtime):
        super().__init__(config, hidden_size=hidden_size, **runtime)

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        length = mask.shape[1]
        positions = torch.arange(length, device=mask.device)
        first = torch.where(mask, positions, length).amin(1)
        return pick_token(hidden, first, first < length)
