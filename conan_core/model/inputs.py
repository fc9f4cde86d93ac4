"""Per-call inputs of the Conan decoder: padding layout, mask context, positions and the KV cache.

Two padding layouts (see :mod:`conan_core.masks.base`):

* **right padding** (every training batch, and any batch without padding): the attention mask
  is ``1 ... 1 0 ... 0`` per row. The context carries only the lengths and positions are
  ``0 .. L-1``; this is the original fast path and its numbers never change;
* **any other padding** (left padding, holes): the context also carries the bool mask, the
  masks read each token's rank among the real tokens, and positions are that rank, so every
  real token gets the hidden state it has in the unpadded sequence.

A KV cache (transformers' ``Cache`` classes; ``DynamicCache`` is what ``generate`` builds) holds
the keys and values of earlier positions: the queries are then the last ``L`` of
``past + L`` positions and the attention mask, when given, covers all ``past + L`` of them.
"""

from __future__ import annotations

from typing import Any

import torch

from conan_core.errors import ConanError
from conan_core.masks.base import MaskContext
from conan_core.model.rope import default_position_ids, positions_from_mask, positions_from_segments


def padding_layout(attention_mask: torch.Tensor | None, batch: int, kv_len: int,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(lengths LongTensor [B], valid bool [B, kv_len] or None)`` from a 0/1 ``attention_mask``
    [B, kv_len] (None = no padding). ``valid`` is None when the padding is on the right (the
    fast path). One host sync when a mask is given.

    Raises :class:`ConanError` for a mask of another shape or with values other than 0 and 1
    (a 4-D or additive float mask is not an ``attention_mask`` here: the attention pattern is
    the ``mask`` argument)."""
    if attention_mask is None:
        return torch.full((batch,), kv_len, dtype=torch.long, device=device), None
    if tuple(attention_mask.shape) != (batch, kv_len):
        raise ConanError(f"attention_mask must be [B, L] = {[batch, kv_len]} (1 = real token, 0 = padding; "
                         f"L counts cached positions too), got shape {list(attention_mask.shape)}. "
                         "Pass the attention pattern as mask=<masks component>, not as a 4-D mask.")
    attention_mask = attention_mask.to(device=device)
    lengths = attention_mask.long().sum(-1)
    valid = attention_mask != 0
    right = torch.arange(kv_len, device=device) < lengths[:, None]
    binary, right_padded = torch.stack(((valid == (attention_mask == 1)).all(), (valid == right).all())).tolist()
    if not binary:
        raise ConanError("attention_mask must hold only 0 (padding) and 1 (real token); got other values. "
                         "An additive float mask is not accepted: build a 0/1 mask from the token ids.")
    return lengths, (None if right_padded else valid)


def mask_context(attention_mask: torch.Tensor | None, batch: int, q_len: int, past: int, alpha: Any,
                 segment_ids: torch.Tensor | None, device: torch.device) -> MaskContext:
    """The :class:`MaskContext` of one call: ``q_len`` queries after ``past`` cached positions."""
    kv_len = past + q_len
    lengths, valid = padding_layout(attention_mask, batch, kv_len, device)
    return MaskContext(lengths=lengths, seq_len=q_len, alpha=float(alpha), segment_ids=segment_ids,
                       kv_len=kv_len, valid=valid)


def position_ids_for(ctx: MaskContext, segment_ids: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """LongTensor [B, seq_len]: RoPE positions of the queries of ``ctx``.

    Right padding without a cache: ``0 .. L-1`` (or per document with ``segment_ids``), exactly
    as before padding-aware positions existed. Otherwise each real token's index among the real
    tokens (per document with ``segment_ids``), the last ``seq_len`` of them."""
    batch, past = ctx.batch_size, ctx.q_offset
    if ctx.valid is None:
        if past == 0:
            return default_position_ids(batch, ctx.seq_len, device, segment_ids)
        if segment_ids is not None:
            return positions_from_segments(segment_ids)[:, past:]
        return (torch.arange(ctx.seq_len, device=device) + past).expand(batch, ctx.seq_len)
    if segment_ids is not None:
        return positions_from_segments(segment_ids, ctx.valid)[:, past:]
    return positions_from_mask(ctx.valid)[:, past:]


def resolve_cache(cache: Any, past_key_values: Any) -> Any:
    """The cache argument under either name (``cache`` in transformers 5, ``past_key_values``
    before); both at once is an error."""
    if cache is not None and past_key_values is not None:
        raise ConanError("pass the KV cache once: as cache= or as past_key_values=, not both")
    return cache if cache is not None else past_key_values


def new_cache(config: Any) -> Any:
    """An empty ``transformers.DynamicCache`` for ``config``."""
    from transformers import DynamicCache

    try:
        return DynamicCache(config=config)
    except TypeError:  # transformers releases whose DynamicCache takes no config
        return DynamicCache()


def cached_length(cache: Any) -> int:
    """Positions already in ``cache`` (0 for None). Raises :class:`ConanError` for a cache this
    model cannot use: a legacy tuple, or a fixed-size (static / compileable) cache, whose padded
    keys would break the padding rules."""
    if cache is None:
        return 0
    from transformers import Cache

    if not isinstance(cache, Cache):
        raise ConanError(f"the KV cache must be a transformers Cache (e.g. DynamicCache), got "
                         f"{type(cache).__name__}; legacy tuples of tensors are not accepted")
    if getattr(cache, "is_compileable", False):
        raise ConanError(f"{type(cache).__name__} is a fixed-size cache, which this model does not support; "
                         "use transformers.DynamicCache (generate's default: leave cache_implementation unset)")
    return int(cache.get_seq_length())
