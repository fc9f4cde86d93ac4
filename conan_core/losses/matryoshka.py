"""Matryoshka representation learning (MRL) wrapper (RECIPE §1, §5), key ``matryoshka``."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from pydantic import Field, model_validator

from conan_core.errors import ConanError
from conan_core.losses.base import ContrastiveLoss, LossInputError, LossOutput
from conan_core.registry import ComponentConfig, component_field

PAPER_DIMS = [256, 512, 1024, 1536, 2048, 3072, 3584]


class MatryoshkaDimsWarning(UserWarning):
    """The trained Matryoshka dims differ from the configured ones (skipped or added)."""


class MatryoshkaLoss(ContrastiveLoss):
    """``sum_d w_d * inner(prefix_d(query, positive, negatives))`` over truncated prefixes.

    ``forward`` is the ``contrastive_losses`` contract; the wrapped loss (a ``contrastive_losses``
    spec) gets the query, positive and negative embeddings cut to ``[..., :d]`` and the ids as they
    are. All embeddings must share the same size D.
    Re-normalisation of each prefix is the wrapped loss's cosine (every embedding loss here
    L2-normalises its inputs), so a prefix is scored exactly as a D'-dim embedding would be.

    Dims actually trained for embeddings of size D (:meth:`dims_for`), never changed silently:

    * listed dims above D are skipped with their weights (so the paper's list runs on a small
      model) and a :class:`MatryoshkaDimsWarning` names them;
    * D itself is added (weight 1.0) when not listed and ``include_full`` is on (the default: an
      untrained full size is rarely wanted), with a warning naming it. ``include_full: false``
      trains only the listed dims, which is sentence-transformers' ``MatryoshkaLoss``: with the
      same dims both compute the same loss;
    * ``strict: true`` raises a :class:`ConanError` instead of either warning.

    Warnings are issued once per embedding size per loss object.

    ``loss`` is the weighted sum; ``neg_scores`` come from the largest trained size; metrics are that
    size's metrics plus ``loss@{d}`` per dim. ``grad_cache_chunk`` and ``shared_queries`` are the
    wrapped loss's.
    """

    class Config(ComponentConfig):
        loss: dict[str, Any] | str = component_field("contrastive_losses", "info_nce",
                                                       description="the wrapped contrastive loss")
        dims: list[int] = Field(default_factory=lambda: list(PAPER_DIMS),
                                description="prefix sizes; those above the embedding size are skipped "
                                            "with a warning (an error when strict)")
        weights: list[float] | None = Field(None, description="one weight per entry of dims (equal when unset)")
        include_full: bool = Field(True, description="also train the full embedding size when dims does "
                                   "not list it (with a warning); false = only the listed dims, as "
                                   "sentence-transformers' MatryoshkaLoss")
        strict: bool = Field(False, description="raise instead of warning when a listed dim exceeds the "
                             "embedding size or the full size is added")

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
        self._checked: set[int] = set()  # embedding sizes already warned about

    @property
    def grad_cache_chunk(self) -> int | None:  # type: ignore[override]
        return self.inner.grad_cache_chunk

    @property
    def shared_queries(self) -> bool:  # type: ignore[override]
        return self.inner.shared_queries

    def dims_for(self, size: int) -> list[tuple[int, float]]:
        """(dim, weight) pairs trained for embeddings of ``size``: the listed dims below ``size``
        in the configured order, then ``size`` itself when listed (its weight) or when
        ``include_full`` is on (weight 1.0). Pure: :meth:`check_size` reports what this adds or
        skips."""
        weights = self.config.weights or [1.0] * len(self.config.dims)
        pairs = [(d, w) for d, w in zip(self.config.dims, weights) if d < size]
        full = [w for d, w in zip(self.config.dims, weights) if d == size]
        if full or self.config.include_full:
            pairs.append((size, full[0] if full else 1.0))
        return pairs

    def check_size(self, size: int) -> None:
        """Warn (or raise, ``strict``) about dims skipped or added for embeddings of ``size``."""
        if size in self._checked:
            return
        dropped = [d for d in self.config.dims if d > size]
        added = [size] if self.config.include_full and size not in self.config.dims else []
        problems = []
        if dropped:
            problems.append(f"dims {dropped} exceed the embedding size {size} and are skipped "
                            f"(list dims <= {size} to silence this)")
        if added:
            problems.append(f"the full size {size} is not in dims {self.config.dims} and is trained too "
                            f"(add {size} to dims, or set include_full: false to train only the listed dims)")
        if not any(d <= size for d in self.config.dims) and not added:
            raise ConanError(f"matryoshka: no dim of {self.config.dims} fits embeddings of size {size} and "
                             "include_full is false, so nothing would be trained; list dims <= "
                             f"{size} or set include_full: true")
        if problems and self.config.strict:
            raise ConanError("matryoshka (strict): " + "; ".join(problems) + ". Fix loss.dims in the run config.")
        for problem in problems:
            warnings.warn(f"matryoshka: {problem}", MatryoshkaDimsWarning, stacklevel=2)
        self._checked.add(size)

    def forward(self, query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor | None = None, *,
                query_ids: torch.Tensor | None = None, positive_ids: torch.Tensor | None = None,
                negative_ids: torch.Tensor | None = None) -> LossOutput:
        sizes = {t.shape[-1] for t in (query, positive, negatives) if isinstance(t, torch.Tensor)}
        if len(sizes) != 1:
            raise LossInputError(f"matryoshka: expected embeddings of one size, got sizes {sorted(sizes)}")
        size = sizes.pop()
        self.check_size(size)
        dims = self.dims_for(size)
        largest = max(d for d, _ in dims)
        losses = []
        out = None
        ids = {"query_ids": query_ids, "positive_ids": positive_ids, "negative_ids": negative_ids}
        for d, _ in dims:
            cut = negatives[..., :d] if negatives is not None else None
            result = self.inner(query[..., :d], positive[..., :d], cut, **ids)
            losses.append(result.loss)
            if d == largest:
                out = result  # neg_scores and metrics come from the largest trained size
        stacked = torch.stack(losses)
        weights = torch.tensor([w for _, w in dims], dtype=stacked.dtype, device=stacked.device)
        metrics = {f"loss@{d}": v for (d, _), v in zip(dims, stacked.detach().tolist())}
        return LossOutput(loss=(stacked * weights).sum(), neg_scores=out.neg_scores,
                          metrics={**out.metrics, **metrics})
