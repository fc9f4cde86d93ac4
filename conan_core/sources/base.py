"""Base class of data sources (registry kind ``sources``)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from typing import Iterator

from conan_core.registry import ComponentConfig


class Source(ABC):
    """An iterable of sample dicts, split by rank and dataloader worker, with a resumable position.

    Runtime arguments: ``rank``, ``world_size`` (default 0, 1) and ``seed``.
    """

    class Config(ComponentConfig):
        """No fields at this level."""

    @abstractmethod
    def __init__(self, config: ComponentConfig, **runtime):
        self.config = config

    def __iter__(self) -> Iterator[dict]:
        """Abstract: see the class docstring."""

    @abstractmethod
    def state_dict(self) -> dict:
        """Abstract: see the class docstring."""

    @abstractmethod
    def load_state_dict(self, state: dict) -> None:
        """Abstract: see the class docstring."""
