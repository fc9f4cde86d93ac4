"""Shared set-up of the benchmark suites.

* ``interleave`` fixture: the :mod:`interleave` module (interleaved rounds, per-round ratios,
  ``record``), loaded by path so it works under any pytest import mode.
* Threads: torch uses ``OMP_NUM_THREADS`` (``make bench`` sets 1): on a shared 2-core machine one
  thread per process keeps a neighbour's load from stretching every parallel region, which is
  what made ratios wander between runs. ``CONAN_BENCH_THREADS`` overrides it for a dedicated machine.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("conan_bench_interleave", Path(__file__).with_name("interleave.py"))
_interleave = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _interleave  # dataclasses resolve their module through sys.modules
_spec.loader.exec_module(_interleave)


def pytest_configure(config):
    import torch

    threads = os.environ.get("CONAN_BENCH_THREADS") or os.environ.get("OMP_NUM_THREADS")
    if threads:
        torch.set_num_threads(int(threads))


@pytest.fixture(scope="session")
def interleave():
    return _interleave
