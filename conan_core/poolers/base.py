"""Base class of poolers (registry kind ``poolers``)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from conan_core.registry import ComponentConfig


class Pooler(nn.Module, ABC):
    """``forward(hidden [B, L, H], attention_mask [B, L] (1 = real token), pool_mask=None) -> [B, H]``.

    ``pool_mask`` (optional, [B, L]) further restricts which tokens are pooled (e.g. instruction
    tokens excluded). Runtime argument: ``hidden_size``.
    """

    class Config(ComponentConfig):
        """No fields at this level."""

    @abstractmethod
    def __init__(self, config: ComponentConfig, *, hidden_size: int | None = None, **runtime):
        super().__init__()
        self.config = config
        self.hidden_size = hidden_size

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor, pool_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Abstract: see the class docstring."""
