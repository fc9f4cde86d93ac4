"""GradCache around a contrastive loss (a large batch at one chunk's memory), key ``cached``."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from conan_core.losses.base import ContrastiveLoss, LossOutput
from conan_core.registry import ComponentConfig, component_field


class CachedLoss(ContrastiveLoss):
    """The wrapped contrastive loss, computed by the trainer with GradCache.

    ``forward`` is the wrapped loss's (the ``contrastive_losses`` contract), so the value is exactly
    the wrapped loss's. What changes is how the embeddings are made: ``grad_cache_chunk`` tells the
    stage's objective to encode ``mini_batch_size`` rows at a time without keeping activations and
    to backpropagate through the cached embedding gradients
    (:func:`conan_core.train.grad_cache.grad_cache_step`): the gradients equal those of the plain
    batch, with one chunk's activation memory and about one extra forward pass.
    """

    class Config(ComponentConfig):
        loss: dict[str, Any] | str = component_field("contrastive_losses", "info_nce",
                                                     description="the wrapped contrastive loss")
        mini_batch_size: int = Field(32, gt=0, description="rows encoded at once (peak activation memory)")

    def __init__(self, config: Config, **runtime):
        super().__init__(config, **runtime)
        from conan_core.registries import REGISTRIES

        self.inner = REGISTRIES["contrastive_losses"].build(config.loss, path="loss", **runtime)

    @property
    def grad_cache_chunk(self) -> int:  # type: ignore[override]
        return int(self.config.mini_batch_size)

    @property
    def shared_queries(self) -> bool:  # type: ignore[override]
        return self.inner.shared_queries

    def forward(self, query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor | None = None, *,
                query_ids: torch.Tensor | None = None, positive_ids: torch.Tensor | None = None,
                negative_ids: torch.Tensor | None = None) -> LossOutput:
        return self.inner(query, positive, negatives, query_ids=query_ids, positive_ids=positive_ids,
                          negative_ids=negative_ids)
