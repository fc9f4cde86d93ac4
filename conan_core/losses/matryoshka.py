"""Matryoshka representation learning (MRL) wrapper (RECIPE §1, §5), key ``matryoshka``."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, model_validator

from conan_core.losses.base import ContrastiveLoss, LossInputError, LossOutput
from conan_core.registry import ComponentConfig, component_field

PAPER_DIMS = [256, 512, 1024, 1536, 2048, 3072, 3584]


class MatryoshkaLoss(ContrastiveLoss):
    """``sum_d w_d * inner(prefix_d(query, positive, negatives))`` over truncated prefixes.

    ``forward`` is the ``contrastive_losses`` contract; the wrapped loss (a ``contrastive_losses``
    spec) gets the query, positive and negative embeddings cut to ``[..., :d]`` and the ids as they
    are. All embeddings must share the same size D.

    Dims: the configured ``dims`` larger than D are skipped (with their weights), so the paper's
    list works unchanged on a small model; D itself is always included (weight 1.0 when D is not
    listed). Re-normalisation of each prefix is the wrapped loss's cosine (every embedding loss
    here L2-normalises its inputs), so a prefix is scored exactly as a D'-dim embedding would be.

    ``loss`` is the weighted sum; ``neg_scores`` come from the full size D; metrics are the full-size
    metrics plus ``loss@{d}`` per dim. ``grad_cache_chunk`` and ``shared_queries`` are the wrapped
    loss's.
    """

    class Config(ComponentConfig):
        loss: dict[str, Any] | str = component_field("contrastive_losses", "info_nce",
                                                       description="the wrapped contrastive loss")
        dims: list[int] = Field(default_factory=lambda: list(PAPER_DIMS),
                                description="prefix sizes; those above the embedding size are skipped")
        weights: list[float] | None = Field(None, description="one weight per entry of dims (equal when unset)")

        @model_validator(mode="after")
        def _check(self) -> "MatryoshkaLoss.Config":
            if not self.dims:
                raise ValueError("dims must list at least one prefix size")
            if any(d <= 0 for d in self.dims):
                raise ValueError(f"dims must be positive, got {self.dims}")
            if len(set(self.dims)) != len(self.dims):
                raise ValueError(f"dims must not repeat, got {self.dims}")
            if self.weights is not None:
                if len(self.weights) != len(self.dims):
                    raise ValueError(f"weights has {len(self.weights)} entries but dims has {len(self.dims)}; "
                                     "give one weight per dim or leave weights unset")
                if any(w < 0 for w in self.weights):
                    raise ValueError(f"weights must be >= 0, got {self.weights}")
            return self

    def __init__(self, config: Config, **runtime):
        super().__init__(config, **runtime)
        from conan_core.registries import REGISTRIES

        self.inner = REGISTRIES["contrastive_losses"].build(config.loss, path="loss", **runtime)

    @property
    def grad_cache_chunk(self) -> int | None:  # type: ignore[override]
        return self.inner.grad_cache_chunk

    @property
    def shared_queries(self) -> bool:  # type: ignore[override]
        return self.inner.shared_queries

    def dims_for(self, size: int) -> list[tuple[int, float]]:
        """(dim, weight) pairs used for embeddings of ``size``: listed dims <= size, then size itself."""
        weights = self.config.weights or [1.0] * len(self.config.dims)
        pairs = [(d, w) for d, w in zip(self.config.dims, weights) if d < size]
        full = [w for d, w in zip(self.config.dims, weights) if d == size]
        pairs.append((size, full[0] if full else 1.0))
        return pairs

    def forward(self, query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor | None = None, *,
                query_ids: torch.Tensor | None = None, positive_ids: torch.Tensor | None = None,
                negative_ids: torch.Tensor | None = None) -> LossOutput:
        sizes = {t.shape[-1] for t in (query, positive, negatives) if isinstance(t, torch.Tensor)}
        if len(sizes) != 1:
            raise LossInputError(f"matryoshka: expected embeddings of one size, got sizes {sorted(sizes)}")
        size = sizes.pop()
        dims = self.dims_for(size)
        ids = {"query_ids": query_ids, "positive_ids": positive_ids, "negative_ids": negative_ids}
        losses = []
        out = None
        for d, _ in dims:
            cut = negatives[..., :d] if negatives is not None else None
            out = self.inner(query[..., :d], positive[..., :d], cut, **ids)  # the last one is the full size D
            losses.append(out.loss)
        stacked = torch.stack(losses)
        weights = torch.tensor([w for _, w in dims], dtype=stacked.dtype, device=stacked.device)
        metrics = {f"loss@{d}": v for (d, _), v in zip(dims, stacked.detach().tolist())}
        return LossOutput(loss=(stacked * weights).sum(), neg_scores=out.neg_scores,
                          metrics={**out.metrics, **metrics})
