"""Base class of data sources (registry kind ``sources``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterator

from conan_core.data.resumable import Resumable
from conan_core.registry import ComponentConfig


class Source(Resumable, ABC):
    """An iterable of sample dicts, split by rank and dataloader worker, with a resumable position.

    Runtime arguments: ``rank``, ``world_size`` (default 0, 1) and ``seed``. Every yielded sample
    has ``__key__`` (its key) and ``__url__`` (the shard or file it came from). ``counters()``
    reports bad data by reason (see conan_core.data.samples and conan_core.sources.engine).

    A source whose Config has required fields (a data path) defines ``example_config(tmp_dir)``: it
    writes small real data into ``tmp_dir`` and returns the fields that read it, so the conformance
    suite (:mod:`conan_core.testing`) checks plugin sources like the built-in ones.
    """

    class Config(ComponentConfig):
        """No fields at this level."""

    @classmethod
    def example_config(cls, tmp_dir: Path) -> dict:
        """Config fields reading small example data written into ``tmp_dir`` (none needed here)."""
        return {}

    @abstractmethod
    def __init__(self, config: ComponentConfig, **runtime):
        self.config = config

    @abstractmethod
    def __iter__(self) -> Iterator[dict]:
        """Samples from the current position (see :class:`~conan_core.data.resumable.Resumable`)."""

    @abstractmethod
    def state_dict(self) -> dict:
        """The position, as JSON-compatible data (see :class:`~conan_core.data.resumable.Resumable`)."""

    @abstractmethod
    def load_state_dict(self, state: dict) -> None:
        """Restore a position saved by :meth:`state_dict` (see :class:`~conan_core.data.resumable.Resumable`)."""
