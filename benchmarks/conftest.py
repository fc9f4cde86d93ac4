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


@pytest.fixture
def hand_step():
    """``hand_step(model, batch) -> step``: a plain training step on a causal LM (``model(input_ids,
    attention_mask, labels).loss``, backward, gradient clipping at 1.0, then the ``adamw`` factory's
    optimizer at lr 1e-3, weight decay 0.001); ``step()`` returns the loss as a float. The anchor
    loops of the step benchmarks."""
    import torch

    from conan_core.registries import REGISTRIES

    def make(model: torch.nn.Module, batch: dict):
        opt = REGISTRIES["optimizers"].build({"type": "adamw"}).build(model.named_parameters(), 1e-3, 0.001)

        def step() -> float:
            loss = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                         labels=batch["labels"]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return float(loss.detach())

        return step

    return make
