"""Base class of losses (registry kind ``losses``) and what every loss returns.

Each loss documents its own ``forward`` contract. Embedding losses return a :class:`LossOutput`
whose ``neg_scores`` feed the hard-negative miner (RECIPE §4: the scores "come for free" from the
similarities the loss already computes).

Numerics (RECIPE §5, RELIABILITY #16): similarities, logits and softmax run in float32 (float64 when
an input is float64, so tests can compare against float64 references) with autocast disabled, so a
bf16 autocast region around the model never lowers the precision of the loss itself.
"""

from __future__ import annotations

from abc import ABC
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from conan_core.errors import ConanError
from conan_core.registry import ComponentConfig


@dataclass
class LossOutput:
    """What an embedding loss returns.

    * ``loss``: scalar tensor (float32, or float64 for float64 inputs). It carries the autograd graph
      unless the loss sets ``handles_backward = True`` (then it is detached: gradients were already
      accumulated into the parameters).
    * ``neg_scores``: float32 [B, n], detached: cosine of query i with each of its own n hard
      negatives (the miner consumes these), or None when the loss has no hard negatives.
    * ``metrics``: plain floats for logging (one host sync per loss call).
    """

    loss: torch.Tensor
    neg_scores: torch.Tensor | None = None
    metrics: dict[str, float] = field(default_factory=dict)


class Loss(nn.Module, ABC):
    """A training objective; built as ``REGISTRIES["losses"].build(spec, **runtime)``.

    ``handles_backward``: False for ordinary losses (the trainer calls ``out.loss.backward()``).
    True for losses that run the backward pass themselves (GradCache, key ``cached``): the trainer
    must then NOT call ``backward()`` on the returned (detached) loss.
    """

    handles_backward: bool = False

    class Config(ComponentConfig):
        """No fields at this level."""

    def __init__(self, config: ComponentConfig, **runtime):
        super().__init__()
        self.config = config


# ----------------------------------------------------------------------------- shared helpers

def compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """float64 if any given tensor is float64, else float32 (never a 16-bit type)."""
    if any(t is not None and t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def full_precision(device: torch.device) -> AbstractContextManager:
    """A region where autocast is off for ``device``'s type, so matmuls keep their input dtype."""
    return torch.autocast(device_type=device.type, enabled=False)


def unit(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """L2-normalise the last dim in ``dtype``; a zero vector stays zero (finite, cosine 0)."""
    return F.normalize(x.to(dtype), dim=-1, eps=1e-12)


def check_embeddings(name: str, x: torch.Tensor, ndim: int, batch: int | None = None,
                     dim: int | None = None) -> None:
    """Raise a :class:`LossInputError` naming ``name`` unless ``x`` is a floating tensor of the shape."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != ndim:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise LossInputError(f"{name}: expected a floating tensor with {ndim} dims, got {got}")
    if batch is not None and x.shape[0] != batch:
        raise LossInputError(f"{name}: batch size {x.shape[0]} != {batch} (the query batch size)")
    if dim is not None and x.shape[-1] != dim:
        raise LossInputError(f"{name}: embedding size {x.shape[-1]} != {dim} (the query's)")


class LossInputError(ConanError, ValueError):
    """A loss received tensors of the wrong shape or type; the message names the argument."""
