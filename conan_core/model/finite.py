"""Refuse models with NaN/Inf weights before they are exported or used to encode."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from conan_core.errors import ConanError


class NonFiniteModelError(ConanError):
    """A saved model holds NaN or Inf weights."""

    exit_code = 5


def nonfinite_tensors(module: nn.Module) -> list[str]:
    """Names of the parameters and buffers of ``module`` that hold NaN or Inf."""
    bad = []
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if tensor.is_floating_point() and tensor.numel() and not bool(torch.isfinite(tensor.detach()).all()):
            bad.append(name)
    return bad


def require_finite(module: nn.Module, source: str | Path, *, what: str) -> None:
    """Raise :class:`NonFiniteModelError` naming ``source`` when ``module`` has non-finite weights."""
    bad = nonfinite_tensors(module)
    if bad:
        shown = ", ".join(bad[:6]) + (f" (+{len(bad) - 6} more)" if len(bad) > 6 else "")
        raise NonFiniteModelError(
            f"{what}: the model in {source} has non-finite weights in {len(bad)} tensor(s) ({shown}); its "
            "embeddings would be NaN. It was trained with a diverging learning rate or saved by a version "
            "without the post-step weight check: retrain the stage with a lower lr.")
