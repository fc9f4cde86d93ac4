"""The resumable iterable (:class:`Resumable`) every source and every data step is, and helpers.

Data moves one way: ``sources/`` read samples, ``data/`` tokenises, batches and packs them and
makes the stream resumable (:mod:`conan_core.data.loader`), ``train/`` collates and trains. This
module is the contract they share; it imports nothing from the rest of the library but errors.
"""

from __future__ import annotations

import hashlib
import random
from abc import ABC, abstractmethod
from typing import Any, Iterator, Sequence

from torch.utils.data import IterableDataset, get_worker_info

from conan_core.data.samples import DataError


class Resumable(IterableDataset, ABC):
    """A resumable iterable: a cursor over a stream of items.

    Contract shared by sources and by everything built on them (``Map``, ``TaskBatcher``,
    ``PackedLMBatches``, ``DropIds``):

    * ``iter(it)`` continues from the current position (a cursor, not a collection); one live
      iterator at a time.
    * ``state_dict()`` taken between two items, loaded with ``load_state_dict()`` into a freshly
      built object with the same arguments, makes it yield exactly the items the first one would
      have yielded next. States are plain JSON-compatible data.
    * ``counters()`` returns cumulative event counts (bad samples, truncations ...).
    * Inside a ``torch.utils.data`` worker a source reads only its worker's piece of the data, so a
      DataLoader over anything built on sources yields every sample once per epoch.
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


def derive_seed(*parts: Any) -> int:
    """A 64-bit seed from ``parts`` (stable across processes and PYTHONHASHSEED)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little")


def rng_state(rng: random.Random) -> list:
    """``rng.getstate()`` as JSON-compatible lists."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def set_rng_state(rng: random.Random, state: Sequence) -> None:
    version, internal, gauss = state
    rng.setstate((version, tuple(internal), gauss))


def worker_split() -> tuple[int, int]:
    """(worker id, number of workers) of the current DataLoader worker; (0, 1) outside one."""
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def inner_state(inner: Any, owner: str) -> Any:
    """State of an inner iterable, or DataError if it is not resumable."""
    if not hasattr(inner, "state_dict"):
        raise DataError(f"{owner} cannot save its position: its input {type(inner).__name__} has no "
                        "state_dict(); build it on a source or another resumable iterable", reason="not_resumable")
    return inner.state_dict()


def load_inner_state(inner: Any, state: Any, owner: str) -> None:
    """Restore an inner iterable's position, or DataError if it is not resumable."""
    if not hasattr(inner, "load_state_dict"):
        raise DataError(f"{owner} cannot restore a position: its input {type(inner).__name__} has no "
                        "load_state_dict()", reason="not_resumable")
    inner.load_state_dict(state)
