"""Base class of poolers (registry kind ``poolers``)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from conan_core.errors import ConanError
from conan_core.registry import ComponentConfig


class PoolerInputError(ConanError, ValueError):
    """A pooler received tensors of the wrong shape, or no pool_mask where one is required."""


class Pooler(nn.Module, ABC):
    """``forward(hidden [B, L, H], attention_mask [B, L] (1 = real token), pool_mask=None) -> [B, H]``.

    ``pool_mask`` (optional, [B, L], 1 = may be pooled) is built by the collator, e.g. 0 on the
    instruction tokens of a query. It is used only when ``exclude_instruction`` is true; the pooler
    then pools the tokens where ``attention_mask & pool_mask`` holds (a missing ``pool_mask`` is an
    error, so instructions are never pooled silently). Otherwise every real token is pooled.
    Runtime argument: ``hidden_size``.

    Output: float32 [B, H] (float64 for float64 hidden): an embedding goes straight into the loss,
    which works in float32. A row with no pooled token (empty text) gives zeros, never NaN
    (RELIABILITY #12); with ``normalize`` it stays zero. Subclasses implement :meth:`pool`.
    """

    class Config(ComponentConfig):
        normalize: bool = Field(False, description="L2-normalise the pooled embedding")
        exclude_instruction: bool = Field(False, description="pool only tokens where the collator's pool_mask "
                                          "is 1 (instruction tokens excluded)")

    def __init__(self, config: ComponentConfig, *, hidden_size: int | None = None, **runtime):
        super().__init__()
        self.config = config
        self.hidden_size = hidden_size

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor,
                pool_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pool ``hidden`` over the selected tokens; see the class docstring for the contract."""
        mask = self.pooled_tokens(hidden, attention_mask, pool_mask)
        out_dtype = torch.promote_types(hidden.dtype, torch.float32)
        if hidden.shape[1] == 0:
            out = hidden.new_zeros(hidden.shape[0], hidden.shape[2], dtype=out_dtype)
        else:
            out = self.pool(hidden, mask).to(out_dtype)
        if self.config.normalize:
            out = F.normalize(out, dim=-1, eps=1e-12)
        return out

    def pooled_tokens(self, hidden: torch.Tensor, attention_mask: torch.Tensor,
                      pool_mask: torch.Tensor | None) -> torch.Tensor:
        """BoolTensor [B, L]: the tokens to pool (checks the shapes)."""
        if not isinstance(hidden, torch.Tensor) or hidden.dim() != 3 or not hidden.is_floating_point():
            raise PoolerInputError(f"{type(self).__name__}: hidden must be a float tensor [B, L, H], "
                                   f"got {getattr(hidden, 'shape', type(hidden).__name__)}")
        shape = tuple(hidden.shape[:2])
        if not isinstance(attention_mask, torch.Tensor) or tuple(attention_mask.shape) != shape:
            raise PoolerInputError(f"{type(self).__name__}: attention_mask must be [B, L] = {shape}, "
                                   f"got {tuple(getattr(attention_mask, 'shape', ()))}")
        mask = attention_mask.to(device=hidden.device) != 0
        if self.config.exclude_instruction:
            if pool_mask is None:
                raise PoolerInputError(f"{type(self).__name__}: exclude_instruction is true but no pool_mask was "
                                       "given; the collator must supply pool_mask (0 on instruction tokens), "
                                       "or set exclude_instruction: false")
            if tuple(pool_mask.shape) != shape:
                raise PoolerInputError(f"{type(self).__name__}: pool_mask must be [B, L] = {shape}, "
                                       f"got {tuple(pool_mask.shape)}")
            mask = mask & (pool_mask.to(device=hidden.device) != 0)
        return mask

    @abstractmethod
    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``hidden`` [B, L, H] (L >= 1), ``mask`` BoolTensor [B, L] -> [B, H]; rows without a True give 0."""


def masked_mean(hidden: torch.Tensor, weights: torch.Tensor, *, binary: bool) -> torch.Tensor:
    """``sum_t weights[b, t] * hidden[b, t] / sum_t weights[b, t]`` -> [B, H]; 0 where a row's weights sum to 0.

    ``weights`` [B, L] >= 0. One batched matmul, so ``hidden`` is read once. ``binary`` (0/1 weights,
    exact in any dtype): the sum runs in ``hidden``'s dtype (bf16 accumulates in fp32 inside the
    matmul, then the sum is rounded to bf16, 2^-9 relative); otherwise weights and ``hidden`` are
    float32 (float64 stays float64). An empty row is set to 0 with ``where``, so even NaN hidden
    states of an all-padding row (attention with every key closed) give a finite zero embedding.
    """
    out_dtype = torch.promote_types(hidden.dtype, torch.float32)
    dtype = hidden.dtype if binary else out_dtype
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        total = torch.bmm(weights.to(dtype)[:, None, :], hidden.to(dtype))[:, 0].to(out_dtype)
    count = weights.to(out_dtype).sum(1, keepdim=True)
    return torch.where(count > 0, total / count.clamp(min=torch.finfo(out_dtype).tiny), 0.0)


def pick_token(hidden: torch.Tensor, index: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """``hidden[b, index[b]]`` -> [B, H] in float32 (float64 stays), 0 where ``present[b]`` is False."""
    out_dtype = torch.promote_types(hidden.dtype, torch.float32)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    picked = hidden[rows, index.clamp(0, hidden.shape[1] - 1)].to(out_dtype)
    return torch.where(present[:, None], picked, 0.0)
