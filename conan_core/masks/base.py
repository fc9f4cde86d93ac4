"""Base class of attention masks (registry kind ``masks``) and the per-batch :class:`MaskContext`.

A mask is a matrix ``M`` in [0, 1] per (query i, key j) of each sequence. Every mask defines one
elementwise rule, :meth:`Mask.value`, written with broadcasting tensor ops only, so the same rule
serves the dense matrix (eager / SDPA backends) and FlexAttention's ``score_mod`` / ``mask_mod``
(evaluated on the fly, no L x L tensor stored).

Conventions shared by every mask (enforced here, not per mask). Two padding layouts exist:

* **right padding** (``ctx.valid is None``, the fast path every training batch takes):
  ``lengths[b]`` is the real length of sequence ``b`` and tokens ``0 .. lengths[b]-1`` are real;
* **any padding** (``ctx.valid`` a bool [B, kv_len]: left padding, holes): the real tokens are
  where ``valid`` is True and ``lengths[b] = valid[b].sum()``. Every rule then reads a query's
  *rank* among the real tokens (its index in the sequence with the padding removed) where it
  would read the index, so the real tokens see exactly the mask of the unpadded sequence
  (the soft mask's ``l`` is the real length and its ``i`` the rank).

In both layouts:

* padding keys are always closed (``M = 0``);
* padding query rows attend to the first real key only (key 0 under right padding; key 0 when
  a row has no real token), so every row has an open key and every backend returns finite
  outputs. Their outputs carry no information and must be ignored downstream (pooling / loss
  masks do). No gradient reaches a padding key or value through a real row.
* the additive bias is ``log M`` with closed entries = ``-inf`` (exact: ``exp(-inf) = 0``). This is
  safe because of the row rule above: no row is fully closed, so no softmax sees an all ``-inf`` row.

Queries may be fewer than keys (decoding with a KV cache): the ``seq_len`` queries are the *last*
``seq_len`` of the ``kv_len`` positions, so query ``i`` sits at position ``q_offset + i`` with
``q_offset = kv_len - seq_len``; rules see that absolute position.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Literal

import torch

from conan_core.registry import ComponentConfig

ExactKind = Literal["causal", "bidirectional"]
ApplyMode = Literal["log_bias", "prob_scale"]


@dataclass(eq=False, frozen=True)
class MaskContext:
    """What a mask needs to know about one batch.

    Attributes:
        lengths: LongTensor [B], real (unpadded) length of each sequence, 0..kv_len.
        seq_len: number of queries L (>= 1); also the number of keys unless ``kv_len`` is given.
        alpha: schedule value in [0, 1] (only the soft mask reads it).
        segment_ids: optional LongTensor [B, kv_len], document id of each token of packed sequences
            (read by the ``document`` mask; ``None`` = one document per row).
        kv_len: number of keys (>= seq_len; default seq_len). Larger when earlier keys come from a
            KV cache: the queries are then the last ``seq_len`` positions.
        valid: optional bool [B, kv_len], True = real token, for padding that is not on the right
            (left padding, holes). ``None`` = right padding described by ``lengths`` alone (the
            fast path). ``lengths`` must equal ``valid.sum(-1)``.

    Frozen and compared by identity (``eq=False``): backends cache per-batch objects (the bias, the
    Flex block mask) keyed on the context object, so build one context per forward, pass it to
    every layer, and build a new one when anything changes.
    """

    lengths: torch.Tensor
    seq_len: int
    alpha: float = 0.0
    segment_ids: torch.Tensor | None = None
    kv_len: int | None = None
    valid: torch.Tensor | None = None
    _padded: bool | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.lengths, torch.Tensor) or self.lengths.dim() != 1:
            raise ValueError(f"MaskContext.lengths must be a 1-D LongTensor [B], got {_describe(self.lengths)}")
        if self.lengths.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"MaskContext.lengths must be an integer tensor, got dtype {self.lengths.dtype}")
        object.__setattr__(self, "seq_len", int(self.seq_len))
        if self.seq_len < 1:
            raise ValueError(f"MaskContext.seq_len must be >= 1, got {self.seq_len}")
        kv_len = self.seq_len if self.kv_len is None else int(self.kv_len)
        if kv_len < self.seq_len:
            raise ValueError(f"MaskContext.kv_len ({kv_len}) must be >= seq_len ({self.seq_len}): "
                             "the queries are the last seq_len of the kv_len positions")
        object.__setattr__(self, "kv_len", kv_len)
        object.__setattr__(self, "alpha", float(self.alpha))
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"MaskContext.alpha must be in [0, 1], got {self.alpha}")
        expected = (self.lengths.shape[0], kv_len)
        if self.segment_ids is not None and tuple(self.segment_ids.shape) != expected:
            raise ValueError(f"MaskContext.segment_ids must have shape {list(expected)} [B, kv_len], "
                             f"got {list(self.segment_ids.shape)}")
        if self.valid is not None:
            if self.valid.dtype != torch.bool or tuple(self.valid.shape) != expected:
                raise ValueError(f"MaskContext.valid must be a bool tensor of shape {list(expected)} "
                                 f"[B, kv_len], got {_describe(self.valid)}")

    @property
    def batch_size(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def device(self) -> torch.device:
        return self.lengths.device

    @property
    def q_offset(self) -> int:
        """Position of query 0 among the keys: ``kv_len - seq_len`` (0 without a KV cache)."""
        return self.kv_len - self.seq_len

    def padded(self) -> bool:
        """True if any sequence has a padding token. One host sync, cached."""
        if self._padded is None:
            lo, hi = int(self.lengths.min()), int(self.lengths.max())
            if lo < 0 or hi > self.kv_len:
                raise ValueError(f"MaskContext.lengths must lie in [0, kv_len={self.kv_len}] (the key "
                                 f"count: seq_len={self.seq_len} plus cached keys), got min {lo}, max {hi}")
            object.__setattr__(self, "_padded", lo < self.kv_len)  # a cache, not a field change
        return self._padded

    def tensors(self, dtype: torch.dtype = torch.float32) -> "MaskTensors":
        """The context as tensors on its device; ``alpha`` a 0-d tensor of ``dtype`` (a tensor, not a
        Python float, so a compiled Flex kernel does not recompile when alpha changes)."""
        rank = first = None
        if self.valid is not None:
            rank = self.valid.long().cumsum(-1) - 1  # index among the real tokens (padding: anything)
            first = self.valid.long().argmax(-1)  # first real token; 0 for a row without any
        docs = document_tensors(self.segment_ids) if self.segment_ids is not None and self.valid is None else None
        return MaskTensors(lengths=self.lengths.long(),
                           alpha=torch.tensor(self.alpha, dtype=dtype, device=self.device),
                           segment_ids=self.segment_ids, dtype=dtype, valid=self.valid, rank=rank,
                           first=first, q_offset=self.q_offset,
                           doc_index=None if docs is None else docs[0],
                           doc_start=None if docs is None else docs[1],
                           doc_lengths=None if docs is None else docs[2])


def document_tensors(segment_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(doc_index [B, L], doc_start [B, L], doc_lengths [D])`` of packed rows, all LongTensors.

    A document is a run of equal ids in a row (a new one starts at position 0 and wherever the id
    changes), so ids need only differ between neighbours. ``doc_index`` numbers the documents of
    the whole batch row-major from 0, ``doc_start`` is the row position where a token's document
    starts and ``doc_lengths`` each document's token count (the right-padding tail of a row is a
    document too; the padding rules replace its values anyway)."""
    batch, length = segment_ids.shape
    starts = torch.ones_like(segment_ids, dtype=torch.bool)
    starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    doc_index = starts.reshape(-1).long().cumsum(0).view(batch, length) - 1
    index = torch.arange(length, device=segment_ids.device).expand(batch, length)
    doc_start = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values
    doc_lengths = torch.bincount(doc_index.reshape(-1), minlength=int(starts.sum()))
    return doc_index, doc_start, doc_lengths


@dataclass(frozen=True)
class MaskTensors:
    """:class:`MaskContext` resolved to tensors, as :meth:`Mask.value` reads it.

    ``valid`` / ``rank`` / ``first`` are None under right padding; otherwise bool [B, kv_len],
    LongTensor [B, kv_len] (index among the real tokens) and LongTensor [B] (first real index).
    ``doc_index`` / ``doc_start`` / ``doc_lengths`` describe packed documents
    (:func:`document_tensors`) when the context has ``segment_ids`` and right padding, else None.
    """

    lengths: torch.Tensor
    alpha: torch.Tensor
    segment_ids: torch.Tensor | None
    dtype: torch.dtype
    valid: torch.Tensor | None = None
    rank: torch.Tensor | None = None
    first: torch.Tensor | None = None
    q_offset: int = 0
    doc_index: torch.Tensor | None = None
    doc_start: torch.Tensor | None = None
    doc_lengths: torch.Tensor | None = None

    def token_index(self, b: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        """0-based index of position ``i`` in row ``b`` once the padding is removed (``i`` itself
        under right padding): what a rule reads as "the i-th token"."""
        return i if self.rank is None else self.rank[b, i]


class Mask(ABC):
    """An attention mask: a matrix ``M`` in [0, 1] for each (query i, key j) of each sequence.

    Subclasses implement :meth:`value` (the rule for real tokens); the base adds the padding rules
    (module docstring) and derives everything else:

    * :meth:`matrix` ``(ctx, dtype=float32) -> [B, seq_len, kv_len]`` in [0, 1], rows = queries;
    * :meth:`bias` ``(ctx, dtype) -> [B, 1, seq_len, kv_len]`` = ``log M`` (closed = ``-inf``);
    * :meth:`exact_kind` ``(ctx) -> "causal" | "bidirectional" | None`` for fast dispatch;
    * :meth:`is_causal` ``(ctx) -> bool``: may a KV cache be used under this mask;
    * :meth:`score_mod` / :meth:`mask_mod` / :meth:`block_mask` for FlexAttention;
    * :attr:`apply` tells backends how fractional values enter attention (``log_bias`` or
      ``prob_scale``; the two are the same function, computed differently);
    * :meth:`alpha` ``(step, total_steps)`` the schedule value the trainer puts in the context.
    """

    class Config(ComponentConfig):
        """No fields at this level."""

    #: alpha reported by :meth:`alpha` for masks without a schedule (soft-mask scale: causal = 0,
    #: bidirectional = 1), so logs show one number per step for every mask.
    fixed_alpha: float = 0.0

    def __init__(self, config: ComponentConfig, **runtime):
        self.config = config

    # -- the rule
    @abstractmethod
    def value(self, t: MaskTensors, b: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """``M`` for real tokens, elementwise. ``b``, ``i``, ``j`` are 0-based integer tensors that
        broadcast together (dense: ``[B,1,1]``, ``[1,L,1]``, ``[1,1,L]``; Flex: 0-d). Returns values in
        [0, 1] of dtype ``t.dtype`` and the broadcast shape. Only entries with ``i, j < length``
        are used; others may hold anything finite or not (they are replaced)."""

    @property
    def apply(self) -> ApplyMode:
        """How fractional entries enter attention; binary masks do not care (``log_bias``)."""
        return "log_bias"

    def alpha(self, step: int, total_steps: int | None = None) -> float:
        """alpha in [0, 1] at ``step``; constant :attr:`fixed_alpha` unless the mask has a schedule."""
        return self.fixed_alpha

    def exact_kind(self, ctx: MaskContext) -> ExactKind | None:
        """``"causal"`` / ``"bidirectional"`` when :meth:`matrix` is exactly that mask (which needs a
        batch without padding, because of the padding rules, and for ``"causal"`` as many queries
        as keys: SDPA's ``is_causal`` has no query offset), else None."""
        return None

    def is_causal(self, ctx: MaskContext) -> bool:
        """True when no real query sees a later position under ``ctx``: the condition for a KV
        cache (cached keys and values must not depend on tokens that come after them)."""
        return False

    def has_fractional(self, ctx: MaskContext) -> bool:
        """True if some entry may lie strictly between 0 and 1 (Flex then needs a ``score_mod``)."""
        return False

    # -- derived forms
    def full_value(self, t: MaskTensors, b: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """:meth:`value` with the padding rules applied; same broadcasting contract (``i`` is the
        query's absolute position, ``q_offset`` included)."""
        v = self.value(t, b, i, j)
        if t.valid is None:
            length = t.lengths[b]
            v = torch.where(j < length, v, 0.0)  # Python scalars: nothing allocated inside Flex mods
            return torch.where(i < length, v, (j == 0).to(v.dtype))
        v = torch.where(t.valid[b, j], v, 0.0)
        return torch.where(t.valid[b, i], v, (j == t.first[b]).to(v.dtype))

    def matrix(self, ctx: MaskContext, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Float ``[B, seq_len, kv_len]`` in [0, 1] of ``dtype`` on ``ctx.device`` (rows = queries)."""
        t = ctx.tensors(dtype)
        dev, n, m = ctx.device, ctx.seq_len, ctx.kv_len
        b = torch.arange(ctx.batch_size, device=dev).view(-1, 1, 1)
        i = torch.arange(n, device=dev).view(1, -1, 1)
        if ctx.q_offset:
            i = i + ctx.q_offset
        j = torch.arange(m, device=dev).view(1, 1, -1)
        out = self.full_value(t, b, i, j)
        return out.expand(ctx.batch_size, n, m).contiguous()

    def bias(self, ctx: MaskContext, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Additive logit bias ``log M`` as ``[B, 1, seq_len, kv_len]`` of ``dtype`` (closed = ``-inf``).

        The log is taken in float32 (float64 when ``dtype`` is float64) before the cast, so a
        bf16 bias is the correctly rounded log of the exact value."""
        work = torch.float64 if dtype == torch.float64 else torch.float32
        return torch.log(self.matrix(ctx, work)).to(dtype).unsqueeze(1)

    def mask_mod(self, ctx: MaskContext) -> Callable:
        """FlexAttention ``mask_mod(b, h, q_idx, kv_idx) -> bool``: True where ``M > 0``."""
        t = ctx.tensors(torch.float32)

        offset = ctx.q_offset

        def mask_mod(b, h, q_idx, kv_idx):
            return self.full_value(t, b, q_idx + offset, kv_idx) > 0

        return mask_mod

    def score_mod(self, ctx: MaskContext) -> Callable:
        """FlexAttention ``score_mod(score, b, h, q_idx, kv_idx) -> score + log M`` (float32).

        Computed from (i, j, length, alpha, segment ids) per element; nothing L x L is stored."""
        t = ctx.tensors(torch.float32)

        offset = ctx.q_offset

        def score_mod(score, b, h, q_idx, kv_idx):
            return score + torch.log(self.full_value(t, b, q_idx + offset, kv_idx)).to(score.dtype)

        return score_mod

    def block_mask(self, ctx: MaskContext, *, block_size: int = 128, compiled: bool = False):
        """A FlexAttention ``BlockMask`` of :meth:`mask_mod` for ``[B, *, seq_len, kv_len]`` on ``ctx.device``.

        ``compiled=True`` builds it through ``torch.compile(create_block_mask)``, which never
        materialises the B x L x L boolean mask (use it on GPU for long contexts); the eager build
        does materialise it (fine on CPU test sizes)."""
        from torch.nn.attention.flex_attention import create_block_mask

        build = torch.compile(create_block_mask) if compiled else create_block_mask
        return build(self.mask_mod(ctx), ctx.batch_size, None, ctx.seq_len, ctx.kv_len,
                     device=ctx.device, BLOCK_SIZE=block_size)


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {list(x.shape)} dtype {x.dtype}"
    return type(x).__name__
