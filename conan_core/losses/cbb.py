"""Conan v1's cross-GPU batch-balance loss (RECIPE §5), key ``cbb``."""

from __future__ import annotations

import torch
from pydantic import Field

from conan_core.losses.base import ContrastiveLoss, LossInputError, LossOutput, check_embeddings
from conan_core.losses.gather import all_gather_no_grad, all_gather_with_grad, rank, world_size
from conan_core.losses.info_nce import InfoNCELoss
from conan_core.registry import ComponentConfig


class CBBLoss(ContrastiveLoss):
    """``InfoNCE_cbb``: InfoNCE with the hard negatives of every rank in the denominator.

    ``forward(query [B, H], positive [B, H], negatives [B, n, H] | None = None, *, query_ids,
    positive_ids, negative_ids) -> LossOutput`` (the ``contrastive_losses`` contract).

    v1's full objective is ``InfoNCE_cbb + 0.8 * CoSENT``: the CoSENT term is the supervised
    stage's ``sts_loss`` with ``supervised.sts_weight: 0.8`` (preset ``tiny-cbb``), so this loss is
    one factor of an ablation, not three.

    Contract across ranks (v1's batch balance): every retrieval rank holds the SAME queries and
    positives (same order) and its OWN negatives, with the same B, n and H everywhere; every rank
    calls forward the same number of times (it runs collectives); ``shared_queries`` is True, so the
    supervised stage reads the same pairs on every rank. The negatives (and
    ``negative_ids``) of all ranks are gathered — with gradients, see ``gather.py`` — into
    ``[B, W*n, H]`` (rank 0's n first), and InfoNCE runs on them exactly as ``info_nce`` with
    in-batch negatives (other positives and all gathered hard negatives are candidates; duplicate
    masking by ids as there). Each rank therefore computes the same InfoNCE value, and with DDP's
    gradient averaging the parameter gradient equals the single-process gradient of the global
    batch. One process (no process group) is a world of 1: plain InfoNCE.

    ``neg_scores``: float32 [B, n], the cosines of this rank's own negatives. Metrics: InfoNCE's,
    plus ``info_nce`` (the loss).
    """

    shared_queries = True

    class Config(ComponentConfig):
        temperature: float = Field(0.05, gt=0, description="InfoNCE temperature on cosine similarities")
        mask_duplicates: bool = Field(True, description="mask candidates whose text id equals the "
                                      "query's positive id (as info_nce)")

    def __init__(self, config: Config, **runtime):
        super().__init__(config, **runtime)
        self.info_nce = InfoNCELoss(InfoNCELoss.Config(temperature=config.temperature, in_batch_negatives=True,
                                                       mask_duplicates=config.mask_duplicates))

    def forward(self, query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor | None = None, *,
                query_ids: torch.Tensor | None = None, positive_ids: torch.Tensor | None = None,
                negative_ids: torch.Tensor | None = None) -> LossOutput:
        check_embeddings("query", query, 2)
        b, h = query.shape
        if negatives is not None:
            check_embeddings("negatives", negatives, 3, b, h)
        n = 0 if negatives is None else negatives.shape[1]
        w, r = world_size(), rank()
        if w > 1:
            self._check_same_shapes(query, n)
        if n > 0:
            gathered = all_gather_with_grad(negatives)  # [W*B, n, H], rank-major
            negatives = gathered.reshape(w, b, n, h).transpose(0, 1).reshape(b, w * n, h)
            if negative_ids is not None:
                ids = all_gather_no_grad(negative_ids.to(query.device))
                negative_ids = ids.reshape(w, b, n).transpose(0, 1).reshape(b, w * n)
        else:
            negatives, negative_ids = None, None
        out = self.info_nce(query, positive, negatives, query_ids=query_ids, positive_ids=positive_ids,
                            negative_ids=negative_ids)
        loss = out.loss
        metrics = {**out.metrics, "info_nce": float(out.loss.detach())}
        neg_scores = out.neg_scores[:, r * n:(r + 1) * n] if out.neg_scores is not None else None
        return LossOutput(loss=loss, neg_scores=neg_scores, metrics=metrics)

    @staticmethod
    def _check_same_shapes(query: torch.Tensor, n: int) -> None:
        """Fail on every rank, with the shapes, instead of hanging in a mismatched all_gather."""
        mine = torch.tensor([query.shape[0], n, query.shape[1]], dtype=torch.long, device=query.device)
        shapes = all_gather_no_grad(mine[None]).tolist()
        if any(s != shapes[0] for s in shapes):
            raise LossInputError("cbb: every rank needs the same (queries B, negatives per query n, dim H); "
                                 f"got per rank {[tuple(s) for s in shapes]}")
