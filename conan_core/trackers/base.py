"""Base class of experiment trackers (registry kind ``trackers``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from conan_core.registry import ComponentConfig


class Tracker(ABC):
    """Receives the scalars a training stage logs; ``report_to`` in the run config lists them.

    The trainer builds its trackers on rank 0 once the stage has resumed (or started), calls
    :meth:`log` once per optimizer step with that step's values, and :meth:`close` when the stage
    stops for any reason (finished, preempted, failed).

    Runtime arguments of ``__init__``: ``log_dir`` (the stage directory, ``RUN/<stage>``),
    ``run_dir``, ``run_name`` (``name`` of the config), ``stage``, ``run_config`` (the resolved
    config as plain data) and ``start_step`` (0 for a fresh stage; for a resumed one the step of
    the checkpoint it continues from: an interrupted process may have logged steps after it, and
    the resumed one logs them again, so a tracker that can hide the stale ones does).
    """

    class Config(ComponentConfig):
        """No fields at this level."""

    @abstractmethod
    def __init__(self, config: ComponentConfig, **runtime: Any):
        self.config = config

    @abstractmethod
    def log(self, step: int, scalars: dict[str, float]) -> None:
        """Record ``scalars`` (name -> int or float, possibly NaN/inf) at 1-based optimizer step
        ``step``. Names are flat strings; ``/`` groups them (``eval/out_of_domain/retrieval/ndcg@10``).
        Steps only grow within one process."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release everything (files, background processes); called exactly once."""


def runtime_log_dir(runtime: dict) -> Path:
    """The ``log_dir`` runtime argument as a Path (every tracker is given one)."""
    return Path(runtime["log_dir"])
