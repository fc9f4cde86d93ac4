"""Every random-number state a training step can touch, captured and restored as one dict.

A resumed run is bit-exact only if, at the resume point, Python's ``random``, numpy's global
generator, torch's CPU (and CUDA) generators and the trainer's own data generator hold the same
states as the uninterrupted run did at that step.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch


def seed_everything(seed: int, rank: int = 0) -> torch.Generator:
    """Seed python / numpy / torch (CPU and CUDA) from ``seed`` and ``rank``.

    Ranks get different streams (dropout, sampling) from one config seed. Returns a fresh CPU
    ``torch.Generator`` for data-side randomness (negative sampling, shuffles), seeded the same way,
    so data order never depends on how many random numbers the model consumed.
    """
    derived = (int(seed) * 1_000_003 + int(rank)) % (2**63 - 1)
    random.seed(derived)
    np.random.seed(derived % (2**32))
    torch.manual_seed(derived)
    data_gen = torch.Generator()
    data_gen.manual_seed(derived ^ 0x5DEECE66D)
    return data_gen


def capture_rng_state(data_generator: torch.Generator | None = None) -> dict:
    """A picklable snapshot: ``{"python", "numpy", "torch", "cuda" (list, may be empty), "data"}``."""
    state = {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "data": data_generator.get_state() if data_generator is not None else None,
    }
    return state


def restore_rng_state(state: dict, data_generator: torch.Generator | None = None) -> None:
    """Inverse of :func:`capture_rng_state`. CUDA states are restored only when the device count matches."""
    random.setstate(_as_python_state(state["python"]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys.numpy() if torch.is_tensor(keys) else keys, dtype=np.uint32),
                         int(pos), int(has_gauss), float(gauss)))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    if data_generator is not None and state.get("data") is not None:
        data_generator.set_state(state["data"])


def _numpy_state() -> tuple:
    # plain types + a tensor so checkpoints load with torch.load(weights_only=True)
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return (str(name), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))


def _as_python_state(value):
    # torch.load (weights_only) hands tuples back as lists; random.setstate needs tuples
    if isinstance(value, list):
        return tuple(_as_python_state(v) for v in value)
    return value


@contextmanager
def preserved_rng(data_generator: torch.Generator | None = None) -> Iterator[None]:
    """Run the block with every random-number state of :func:`capture_rng_state` put back
    afterwards (even when it raises): work that is not training (evaluation, opening a tracker)
    cannot shift the random numbers training draws next."""
    state = capture_rng_state(data_generator)
    try:
        yield
    finally:
        restore_rng_state(state, data_generator)
