"""InfoNCE on cosine similarities with in-batch and hard negatives (RECIPE §5), key ``info_nce``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from conan_core.losses.base import (
    ContrastiveLoss,
    LossInputError,
    LossOutput,
    check_embeddings,
    compute_dtype,
    full_precision,
    unit,
)
from conan_core.registry import ComponentConfig


class InfoNCELoss(ContrastiveLoss):
    """``-log softmax(cos(q_i, c) / temperature)[positive_i]`` averaged over the B queries.

    ``forward(query [B, H], positive [B, H], negatives [B, n, H] | None = None, *,
    positive_ids LongTensor[B] | None, negative_ids LongTensor[B, n] | None,
    query_ids LongTensor[B] | None) -> LossOutput``.

    Candidates of query i:
      * ``in_batch_negatives=True`` (default): every positive of the batch (its own is the target)
        and every hard negative of the batch — its own n and, a deliberate choice, the other
        queries' hard negatives too (more negatives at no extra encoding cost). B + B*n columns.
      * ``in_batch_negatives=False``: its positive and its own n hard negatives (1 + n columns);
        then ``negatives`` is required.

    Duplicate masking (``mask_duplicates=True``, RELIABILITY #14). The ids are integer hashes of the
    texts, supplied by the collator. A candidate column is removed from row i's softmax (logit
    -inf, so it is never a negative and gets no gradient from row i) when
      * its text id equals ``positive_ids[i]`` (the same passage as i's positive, e.g. two queries
        sharing a positive, or a mined negative identical to the positive); needs ``positive_ids``
        and, for hard-negative columns, ``negative_ids``;
      * with ``query_ids``: it is the positive of another row with the same query text (a true
        positive of i), or its text id equals ``query_ids[i]`` (the query text itself).
    Row i's own target column is never masked. Without ids nothing is masked.

    Numerics: cosines, logits and the softmax are float32 (float64 for float64 inputs) with autocast
    off, so bf16 embeddings from an autocast region are upcast first; the cross-entropy uses
    log-sum-exp, so cos = 1 everywhere at temperature 0.01 is finite. ``logits_hook`` (an
    ``nn.Identity``) sees the final logits [B, C] (masked columns -inf), for forward hooks that inspect or log them.

    ``neg_scores``: float32 [B, n] cosine of query i with its own hard negatives (None without
    negatives). Metrics: ``accuracy`` (target ranked first), ``masked`` (masked columns in the
    batch), ``pos_cos`` and ``neg_cos`` (means).
    """

    class Config(ComponentConfig):
        temperature: float = Field(0.05, gt=0, description="softmax temperature on cosine similarities "
                                   "(the paper gives none; 0.05 = scale 20)")
        in_batch_negatives: bool = Field(True, description="use the other positives and hard negatives "
                                         "of the batch as negatives of every query")
        mask_duplicates: bool = Field(True, description="mask candidates whose text id equals the "
                                      "query's positive id (needs ids from the collator)")

    def __init__(self, config: Config, **runtime):
        super().__init__(config, **runtime)
        self.logits_hook = nn.Identity()

    def forward(self, query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor | None = None, *,
                query_ids: torch.Tensor | None = None, positive_ids: torch.Tensor | None = None,
                negative_ids: torch.Tensor | None = None) -> LossOutput:
        check_embeddings("query", query, 2)
        b, h = query.shape
        check_embeddings("positive", positive, 2, b, h)
        if negatives is not None:
            check_embeddings("negatives", negatives, 3, b, h)
            if negatives.shape[1] == 0:
                negatives = None
        _check_ids("positive_ids", positive_ids, (b,))
        _check_ids("query_ids", query_ids, (b,))
        if negatives is None:
            negative_ids = None
        else:
            _check_ids("negative_ids", negative_ids, tuple(negatives.shape[:2]))
        if negatives is None and not self.config.in_batch_negatives:
            raise LossInputError("info_nce: in_batch_negatives=False needs hard negatives (got none): the "
                                 "loss would be constant 0; pass negatives or set in_batch_negatives: true")

        dtype = compute_dtype(query, positive, negatives)
        with full_precision(query.device):
            q, p = unit(query, dtype), unit(positive, dtype)
            n = unit(negatives, dtype) if negatives is not None else None
            cos, target, neg_cos = self._cosines(q, p, n)
            masked = self._duplicate_mask(target, positive_ids, negative_ids, query_ids,
                                          0 if n is None else n.shape[1])
            logits = cos / self.config.temperature
            if masked is not None:
                logits = logits.masked_fill(masked, float("-inf"))
            logits = self.logits_hook(logits)
            loss = F.cross_entropy(logits, target)
            pos_cos = cos.gather(1, target[:, None])
            stats = torch.stack([
                (logits.argmax(1) == target).to(dtype).mean(),
                masked.sum().to(dtype) if masked is not None else cos.new_zeros(()),
                pos_cos.mean(),
                neg_cos.mean() if neg_cos is not None else cos.new_zeros(()),
            ]).tolist()
        metrics = {"accuracy": stats[0], "masked": stats[1], "pos_cos": stats[2]}
        if neg_cos is not None:
            metrics["neg_cos"] = stats[3]
        neg_scores = neg_cos.detach().float() if neg_cos is not None else None
        return LossOutput(loss=loss, neg_scores=neg_scores, metrics=metrics)

    def _cosines(self, q: torch.Tensor, p: torch.Tensor, n: torch.Tensor | None):
        """(cos [B, C], target LongTensor[B], own-negative cos [B, n] or None) for unit vectors."""
        b = q.shape[0]
        if self.config.in_batch_negatives:
            cands = p if n is None else torch.cat([p, n.reshape(-1, n.shape[-1])])
            cos = q @ cands.T
            target = torch.arange(b, device=q.device)
            neg_cos = None
            if n is not None:
                # column b + j*n + k holds negative k of query j; own negatives are the j == i block
                neg_cos = cos[:, b:].reshape(b, b, n.shape[1])[target, target]
            return cos, target, neg_cos
        neg_cos = torch.einsum("bh,bnh->bn", q, n)
        cos = torch.cat([(q * p).sum(-1, keepdim=True), neg_cos], 1)
        return cos, torch.zeros(b, dtype=torch.long, device=q.device), neg_cos

    def _duplicate_mask(self, target: torch.Tensor, positive_ids: torch.Tensor | None,
                        negative_ids: torch.Tensor | None, query_ids: torch.Tensor | None,
                        n_per_query: int) -> torch.Tensor | None:
        """BoolTensor [B, C] of candidates to drop from each row (never the row's target), or None."""
        if not self.config.mask_duplicates or (positive_ids is None and query_ids is None):
            return None
        b = target.shape[0]
        device = target.device
        # text id of every candidate column (layout of _cosines) and whether that id is known
        pos_ids = (positive_ids.to(device) if positive_ids is not None
                   else torch.zeros(b, dtype=torch.long, device=device))
        neg_ids = (negative_ids.to(device) if negative_ids is not None
                   else torch.zeros(b, n_per_query, dtype=torch.long, device=device))
        known_pos = torch.full((b,), positive_ids is not None, device=device)
        known_neg = torch.full(neg_ids.shape, negative_ids is not None, device=device)
        if self.config.in_batch_negatives:  # one row of ids shared by every query: [1, B + B*n]
            cand = torch.cat([pos_ids, neg_ids.reshape(-1)])[None]
            known = torch.cat([known_pos, known_neg.reshape(-1)])[None]
        else:  # each query its own candidates: [B, 1 + n]
            cand = torch.cat([pos_ids[:, None], neg_ids], 1)
            known = torch.cat([known_pos[:, None], known_neg], 1)
        masked = torch.zeros(b, cand.shape[1], dtype=torch.bool, device=device)
        for anchor in (positive_ids, query_ids):
            if anchor is not None:
                masked |= known & (cand == anchor.to(device)[:, None])
        if query_ids is not None and self.config.in_batch_negatives:
            qid = query_ids.to(device)
            masked[:, :b] |= qid[:, None] == qid[None, :]  # another row's positive for the same query text
        masked[torch.arange(b, device=device), target] = False
        return masked


def _check_ids(name: str, ids: torch.Tensor | None, shape: tuple[int, ...]) -> None:
    if ids is None:
        return
    if not isinstance(ids, torch.Tensor) or ids.is_floating_point() or tuple(ids.shape) != shape:
        got = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise LossInputError(f"{name}: expected an integer tensor of shape {shape}, got {got} "
                             f"({getattr(ids, 'dtype', '')})")
