"""Rotary position embedding (RoPE), in the "rotate half" layout used by Llama checkpoints.

The cos/sin tables are computed on the fly from ``position_ids`` (a [B, L, D/2] outer product per
forward, shared by all layers) instead of being stored as buffers: nothing to re-create after
meta-device construction, ``from_pretrained`` or ``.to()``, and positions may restart inside a
packed row.
"""

from __future__ import annotations

import torch


def inverse_frequencies(head_dim: int, theta: float, device: torch.device | None = None,
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[head_dim // 2] of ``dtype``: ``theta ** (-2k / head_dim)`` for k = 0 .. head_dim/2 - 1."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).to(dtype) / head_dim
    return 1.0 / (theta ** exponents)


def rope_tables(position_ids: torch.Tensor, head_dim: int, theta: float,
                dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)``, each [B, 1, L, head_dim] in ``dtype``, for integer ``position_ids`` [B, L].

    Angles are computed in float32 (float64 when ``dtype`` is float64, for reference runs)
    whatever ``dtype`` is (bf16 angles at position 30k would be off by whole radians), then
    cast once. The float32 path is bit-compatible with transformers' Llama rotary embedding.
    """
    work = torch.float64 if dtype == torch.float64 else torch.float32
    inv_freq = inverse_frequencies(head_dim, theta, position_ids.device, work)
    with torch.autocast(device_type=position_ids.device.type, enabled=False):
        angles = position_ids.to(work)[..., None] * inv_freq  # [B, L, D/2]
        angles = torch.cat((angles, angles), dim=-1)[:, None]  # [B, 1, L, D]
        return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[x1, x2] -> [-x2, x1]`` over the last dim split in halves."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` [B, H, L, D] by the tables of :func:`rope_tables` ([B, 1, L, D], broadcast over H)."""
    return x * cos + rotate_half(x) * sin


def positions_from_segments(segment_ids: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """LongTensor [B, L]: each token's index inside its segment (restarts at 0 where the id changes).

    Packed rows (several documents in one row, ``segment_ids`` [B, L]) get the same positions as
    if each document had been encoded alone. With ``valid`` (bool [B, L], True = real token) only
    real tokens count: padding anywhere in the row (left, or holes) shifts nothing, a segment
    starts at a real token whose previous *real* token has another id, and padding tokens get 0.
    """
    batch, length = segment_ids.shape
    index = torch.arange(length, device=segment_ids.device).expand(batch, length)
    if valid is None:
        starts = torch.ones_like(segment_ids, dtype=torch.bool)
        starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
        start_index = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values
        return index - start_index
    rank = valid.long().cumsum(-1) - 1  # index among the real tokens
    # position of the previous real token (-1 if none), from a running max of real positions
    real_at = torch.where(valid, index, torch.full_like(index, -1)).cummax(dim=1).values
    prev_real = torch.full_like(index, -1)
    prev_real[:, 1:] = real_at[:, :-1]
    prev_id = segment_ids.gather(1, prev_real.clamp_min(0))
    starts = valid & ((prev_real < 0) | (prev_id != segment_ids))
    start_rank = torch.where(starts, rank, torch.zeros_like(rank)).cummax(dim=1).values
    return (rank - start_rank).masked_fill(~valid, 0)


def positions_from_mask(valid: torch.Tensor) -> torch.Tensor:
    """LongTensor [B, L]: each real token's index among the real tokens of its row (``valid`` bool
    [B, L]); padding tokens get 0. Left padding and holes then leave every real token at the
    position it has in the unpadded sequence (transformers' ``cumsum(mask) - 1`` rule)."""
    return (valid.long().cumsum(-1) - 1).masked_fill(~valid, 0)


def default_position_ids(batch: int, length: int, device: torch.device,
                         segment_ids: torch.Tensor | None = None) -> torch.Tensor:
    """``0 .. L-1`` per row (right padding keeps real tokens at their unpadded positions), or
    per-segment positions when ``segment_ids`` is given."""
    if segment_ids is not None:
        return positions_from_segments(segment_ids)
    return torch.arange(length, device=device).expand(batch, length)
