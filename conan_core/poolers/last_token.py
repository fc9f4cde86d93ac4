"""Last-token pooling (the decoder's summary token under a causal mask), key ``last_token``."""

from __future__ import annotations

import torch

from conan_core.poolers.base import Pooler, pick_token


class LastTokenPooler(Pooler):
    """Hidden state of the last pooled token of each row (see :class:`Pooler` for the contract).

    "Last" is the highest position whose mask is set, so it is right for right padding (the
    library's collation) and also for left padding.
    """

    class Config(Pooler.Config):
        """Fields: ``normalize``, ``exclude_instruction`` (see Pooler.Config)."""

    def __init__(self, config: Config, *, hidden_size: int | None = None, **runtime):
        super().__init__(config, hidden_size=hidden_size, **runtime)

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = torch.where(mask, positions, -1).amax(1)
        return pick_token(hidden, last, last >= 0)
