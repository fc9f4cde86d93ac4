"""Base classes of data sources (registry kind ``sources``) and of resumable pipeline stages."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterator

from torch.utils.data import IterableDataset

from conan_core.registry import ComponentConfig


class Stage(IterableDataset, ABC):
    """A resumable iterable: a cursor over a stream of items.

    Contract shared by sources and by the stages built on them (``Map``, ``MixedSource``,
    ``TaskBatcher``, ``Packer``):

    * ``iter(stage)`` continues from the current position (a stage is a cursor, not a
      collection); one live iterator at a time.
    * ``state_dict()`` taken between two items, loaded with ``load_state_dict()`` into a freshly
      built stage with the same arguments, makes that stage yield exactly the items the first one
      would have yielded next. States are plain JSON-compatible data.
    * ``counters()`` returns cumulative event counts (bad samples, truncations ...).
    * Inside a ``torch.utils.data`` worker a stage reads only its worker's piece of the data (see
      the sources), so a DataLoader over it yields every sample once per epoch.
    """

    @abstractmethod
    def __iter__(self) -> Iterator:
        """Items from the current position."""

    @abstractmethod
    def state_dict(self) -> dict:
        """The position, as JSON-compatible data."""

    @abstractmethod
    def load_state_dict(self, state: dict) -> None:
        """Restore a position saved by :meth:`state_dict`."""

    def counters(self) -> dict[str, int]:
        """Cumulative event counts; stages without events report none."""
        return {}


class Source(Stage, ABC):
    """An iterable of sample dicts, split by rank and dataloader worker, with a resumable position.

    Runtime arguments: ``rank``, ``world_size`` (default 0, 1) and ``seed``. Every yielded sample
    has ``__key__`` (its key) and ``__url__`` (the shard or file it came from). ``counters()``
    reports bad data by reason (see conan_core.data.samples and conan_core.sources.reader).
    """

    class Config(ComponentConfig):
        """No fields at this level."""

    @abstractmethod
    def __init__(self, config: ComponentConfig, **runtime):
        self.config = config

    @abstractmethod
    def __iter__(self) -> Iterator[dict]:
        """Samples from the current position (see :class:`Stage`)."""

    @abstractmethod
    def state_dict(self) -> dict:
        """The position, as JSON-compatible data (see :class:`Stage`)."""

    @abstractmethod
    def load_state_dict(self, state: dict) -> None:
        """Restore a position saved by :meth:`state_dict` (see :class:`Stage`)."""
