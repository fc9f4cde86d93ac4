"""Packed embedding inputs: many sequences in few rows, attention kept inside each sequence.

A contrastive batch holds short queries beside long documents; padded to the longest, most of
its tokens are padding. :func:`packed_hidden` puts the real tokens of one or more right-padded
input dicts end to end into rows (first-fit decreasing, at most ``token_budget`` tokens per row),
runs the backbone once, and gathers every sequence's hidden states back into its padded slot. The
pooler and the loss then see the tensors of the padded path: the same function, up to float
rounding (sums taken over a different set of closed keys).

* :class:`PackedMask` composes the stage's mask with the packing: a query attends only to keys of
  its own sequence, and there the stage's rule is evaluated in the sequence's own coordinates
  (index from the sequence's start, the sequence's real length as ``l``), so the soft mask's
  ``alpha * l / i`` is the unpacked one.
* RoPE positions restart at each sequence (``segment_ids``: the backbone's packed-row rule).
* Attention kernels: SDPA takes the block-diagonal bias ``log M`` ``[R, 1, T, T]``; FlexAttention
  (CUDA) builds a block mask from :meth:`PackedMask.mask_mod`, so blocks across sequences are
  skipped. The default budget is the batch's longest sequence, so a packed row never costs more
  attention than one padded row of the same batch and the dense CPU bias stays ``T x T`` with
  ``T <= max_length`` (a jagged layout would save that bias, but torch 2.13's CPU SDPA takes no
  jagged tensor with a per-sequence float bias).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from conan_core.masks.base import ExactKind, Mask, MaskContext, MaskTensors


class PackedMask(Mask):
    """``inner`` applied per packed sequence: ``M_ij = inner(i - s, j - s; l = len(doc))`` when
    tokens ``i`` and ``j`` belong to the same sequence (starting at row position ``s``), else 0.

    Not a registry component: the trainer and the encoder wrap the stage's mask in it when packing
    is on. Needs ``ctx.segment_ids`` (a new sequence wherever the id changes) and right padding;
    everything else (``apply``, the schedule's ``alpha``, causality) is the inner mask's.
    """

    def __init__(self, inner: Mask):
        super().__init__(inner.config)
        self.inner = inner
        self.fixed_alpha = inner.fixed_alpha

    @property
    def apply(self):
        return self.inner.apply

    def alpha(self, step: int, total_steps: int | None = None) -> float:
        return self.inner.alpha(step, total_steps)

    def value(self, t: MaskTensors, b: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        if t.doc_index is None:
            raise ValueError("PackedMask needs MaskContext.segment_ids with right padding (valid=None): "
                             "the packed rows' sequence ids")
        doc = t.doc_index[b, i]
        same = t.doc_index[b, j] == doc
        start = t.doc_start[b, i]
        local = MaskTensors(lengths=t.doc_lengths, alpha=t.alpha, segment_ids=None, dtype=t.dtype)
        # keys of other sequences read key 0 of this one: any index the inner rule uses stays in range
        v = self.inner.value(local, doc, i - start, torch.where(same, j - start, 0))
        return torch.where(same, v, 0.0)

    def exact_kind(self, ctx: MaskContext) -> ExactKind | None:
        return None

    def is_causal(self, ctx: MaskContext) -> bool:
        return self.inner.is_causal(ctx)

    def has_fractional(self, ctx: MaskContext) -> bool:
        return self.inner.has_fractional(ctx)


@dataclass(frozen=True)
class PackedRows:
    """The packed layout of some right-padded input dicts.

    ``input_ids`` / ``attention_mask`` / ``segment_ids``: LongTensors ``[R, T]`` (real tokens first in
    each row; ``segment_ids`` the sequence's index over all dicts, -1 on the padding tail);
    ``flat_index`` per input dict a LongTensor ``[B_k, L_k]`` into the flattened ``[R * T]`` rows
    (``R * T`` = a zero row appended for padding positions); ``real_tokens`` the number of real
    tokens, ``padded_tokens`` what the padded path would have run (sum of ``B_k * L_k``).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    segment_ids: torch.Tensor
    flat_index: tuple[torch.Tensor, ...]
    real_tokens: int
    padded_tokens: int

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.input_ids.shape)


def right_padded_lengths(attention_mask: torch.Tensor, what: str = "inputs") -> torch.Tensor:
    """LongTensor [B] of real lengths of a right-padded 0/1 mask [B, L]; ValueError otherwise."""
    lengths = attention_mask.long().sum(-1)
    right = torch.arange(attention_mask.shape[1], device=attention_mask.device) < lengths[:, None]
    if not bool((right == (attention_mask != 0)).all()):
        raise ValueError(f"packing needs right-padded {what} (1 ... 1 0 ... 0 per row)")
    return lengths


def first_fit_decreasing(lengths: Sequence[int], budget: int) -> list[tuple[int, int]]:
    """``(row, start)`` per sequence: longest first into the first row with room for it. Every
    length must be <= ``budget``. Deterministic (ties keep input order)."""
    order = sorted(range(len(lengths)), key=lambda k: -lengths[k])
    fill: list[int] = []
    place: list[tuple[int, int]] = [(0, 0)] * len(lengths)
    for k in order:
        n = lengths[k]
        for row, used in enumerate(fill):
            if used + n <= budget:
                place[k] = (row, used)
                fill[row] = used + n
                break
        else:
            place[k] = (len(fill), 0)
            fill.append(n)
    return place


def pack_inputs(inputs: Sequence[dict], token_budget: int | None = None) -> PackedRows:
    """Pack the real tokens of right-padded ``{"input_ids", "attention_mask"}`` dicts ([B_k, L_k]
    each, same device) into rows of ``max(token_budget, longest sequence)`` tokens (None = the
    longest sequence). A sequence of length 0 takes no row; its padded slot reads zeros. One host
    sync for the lengths."""
    if not inputs:
        raise ValueError("pack_inputs needs at least one input dict")
    device = inputs[0]["input_ids"].device
    lengths = [right_padded_lengths(x["attention_mask"], "input_ids") for x in inputs]
    all_lengths = torch.cat(lengths).tolist()
    longest = max(all_lengths + [1])
    budget = longest if token_budget is None else max(int(token_budget), longest)
    place = first_fit_decreasing(all_lengths, budget)
    rows = 1 + max((r for (r, _), n in zip(place, all_lengths) if n > 0), default=0)
    width = max((s + n for (_, s), n in zip(place, all_lengths)), default=1)
    width = max(width, 1)
    seq_row = torch.tensor([r for r, _ in place], dtype=torch.long, device=device)
    seq_start = torch.tensor([s for _, s in place], dtype=torch.long, device=device)
    seq_len = torch.tensor(all_lengths, dtype=torch.long, device=device)

    flat_tokens = torch.cat([x["input_ids"][x["attention_mask"] != 0] for x in inputs])
    # destination of every real token: its sequence's start in the flat rows plus its offset
    token_seq = torch.repeat_interleave(torch.arange(len(all_lengths), device=device), seq_len)
    first_of_seq = torch.cumsum(seq_len, 0) - seq_len
    offset = torch.arange(flat_tokens.numel(), device=device) - first_of_seq[token_seq]
    dest = seq_row[token_seq] * width + seq_start[token_seq] + offset

    input_ids = torch.zeros(rows * width, dtype=inputs[0]["input_ids"].dtype, device=device)
    input_ids[dest] = flat_tokens
    attention = torch.zeros(rows * width, dtype=torch.long, device=device)
    attention[dest] = 1
    # a sequence's id is its index in the batch: neighbours always differ; -1 on the padding tail
    segment = torch.full((rows * width,), -1, dtype=torch.long, device=device)
    segment[dest] = token_seq

    flat_index = []
    pad_slot = rows * width
    first = 0
    for x, n in zip(inputs, lengths):
        batch, length = x["input_ids"].shape
        seqs = torch.arange(first, first + batch, device=device)
        first += batch
        cols = torch.arange(length, device=device)
        index = (seq_row[seqs] * width + seq_start[seqs])[:, None] + cols[None, :]
        flat_index.append(torch.where(cols[None, :] < n[:, None].to(device), index, pad_slot))
    padded = sum(int(x["input_ids"].numel()) for x in inputs)
    # the tail of each row counts as padding (attention_mask 0 there): right padding per row
    return PackedRows(input_ids.view(rows, width), attention.view(rows, width), segment.view(rows, width),
                      tuple(flat_index), real_tokens=int(flat_tokens.numel()), padded_tokens=padded)


def unpack_hidden(hidden: torch.Tensor, packed: PackedRows) -> list[torch.Tensor]:
    """Per input dict, ``hidden`` [R, T, H] gathered back to ``[B_k, L_k, H]`` (zeros at padding
    positions); differentiable."""
    flat = hidden.reshape(-1, hidden.shape[-1])
    flat = torch.cat([flat, flat.new_zeros(1, flat.shape[-1])])
    return [flat[index] for index in packed.flat_index]


def packed_hidden(model: Any, inputs: Sequence[dict], mask: Mask, alpha: float,
                  token_budget: int | None = None) -> list[torch.Tensor]:
    """Last hidden states of right-padded input dicts from one packed forward of ``model`` (a
    backbone with ``encode(input_ids, attention_mask, *, mask, alpha, segment_ids)``): one tensor
    ``[B_k, L_k, H]`` per dict, zeros at padding positions. ``mask`` is the stage's mask; it is
    wrapped in :class:`PackedMask` here unless it already is one."""
    packed = pack_inputs(inputs, token_budget)
    wrapped = mask if isinstance(mask, PackedMask) else PackedMask(mask)
    hidden = model.encode(packed.input_ids, packed.attention_mask, mask=wrapped, alpha=alpha,
                          segment_ids=packed.segment_ids)
    return unpack_hidden(hidden, packed)
