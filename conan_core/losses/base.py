"""The three loss contracts, one registry kind each, and what every loss returns.

* ``lm_losses`` (:class:`LMLoss`): ``forward(hidden [B, L, H], weight [V, H], labels [B, L])`` —
  pretraining and SFT;
* ``contrastive_losses`` (:class:`ContrastiveLoss`): ``forward(query [B, H], positive [B, H],
  negatives [B, n, H] | None, *, query_ids, positive_ids, negative_ids)`` — the weak and
  supervised stages;
* ``pair_losses`` (:class:`PairLoss`): ``forward(e1 [S, H], e2 [S, H], scores [S])`` — STS.

The base class's ``forward`` *is* the contract: the trainer calls every key of a kind exactly that
way, the conformance suite (:mod:`conan_core.testing`) calls it the same way, and the registry
refuses a class whose ``forward`` cannot take those arguments (so a plugin with another signature
fails ``conan validate``, never a training step). Every loss returns a :class:`LossOutput`;
contrastive losses fill ``neg_scores``, which feed the hard-negative miner (RECIPE §4: the scores
"come for free" from the similarities the loss already computes).

Numerics (RECIPE §5, RELIABILITY #16): similarities, logits and softmax run in float32 (float64 when
an input is float64, so tests can compare against float64 references) with autocast disabled, so a
bf16 autocast region around the model never lowers the precision of the loss itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
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
    """What the three loss bases share: the config and ``nn.Module`` plumbing (no contract)."""

    class Config(ComponentConfig):
        """No fields at this level."""

    def __init__(self, config: ComponentConfig, **runtime):
        super().__init__()
        self.config = config


class LMLoss(Loss):
    """Kind ``lm_losses``: next-token losses of pretraining and SFT (built without runtime arguments).

    The trainer calls ``loss(hidden, weight, labels)`` with the final hidden states [B, L, H], the
    LM head (or tied embedding) matrix [V, H] and the labels [B, L] aligned with the input ids
    (position t predicts ``labels[:, t + 1]``; -100 is not counted)."""

    @abstractmethod
    def forward(self, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> LossOutput:
        """Scalar loss over the counted tokens; ``neg_scores`` None."""


class ContrastiveLoss(Loss):
    """Kind ``contrastive_losses``: losses over (query, positive, hard negatives) embeddings (built
    without runtime arguments).

    The trainer calls ``loss(query, positive, negatives, query_ids=..., positive_ids=...,
    negative_ids=...)``: float embeddings [B, H], [B, H] and [B, n, H] or None (no hard negatives),
    and int64 text ids [B], [B] and [B, n] or None (hashes of the normalised texts, for masking
    duplicates). It returns the loss and ``neg_scores`` float32 [B, n] (cosine of query i with its
    own negatives; None without negatives) for the miner.

    Two capabilities a loss may declare (wrappers pass them on from the loss they wrap):

    * ``grad_cache_chunk``: an int asks the trainer to encode in chunks of that many rows with
      GradCache (two passes, one chunk's activations at a time); None (default) encodes at once;
    * ``shared_queries``: True when the loss needs every rank to hold the same queries (``cbb``);
      the supervised stage then reads the same pairs on every rank.
    """

    grad_cache_chunk: int | None = None
    shared_queries: bool = False

    @abstractmethod
    def forward(self, query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor | None = None, *,
                query_ids: torch.Tensor | None = None, positive_ids: torch.Tensor | None = None,
                negative_ids: torch.Tensor | None = None) -> LossOutput:
        """See the class docstring."""


class PairLoss(Loss):
    """Kind ``pair_losses``: losses over scored sentence pairs (STS; built without runtime arguments).

    The trainer calls ``loss(e1, e2, scores)`` with float embeddings [S, H] and [S, H] and gold
    scores float [S] (any scale: losses may use only their order)."""

    @abstractmethod
    def forward(self, e1: torch.Tensor, e2: torch.Tensor, scores: torch.Tensor) -> LossOutput:
        """Scalar loss; ``neg_scores`` None."""


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
