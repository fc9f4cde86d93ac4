"""The modules the trainer optimises: model + pooler + loss in one ``nn.Module`` per stage kind.

Wrapping everything in one module lets DDP / FSDP2 wrap a single root, keeps every trainable
parameter (pooler weights included) in one optimizer and one checkpoint, and makes the forward
the only place a stage's maths lives. ``forward(batch, *, step, alpha)`` returns
``{"loss": 0-dim tensor, "metrics": {name: float}}`` (see :mod:`conan_core.train.loop`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def model_encode(model: nn.Module, inputs: dict, mask: Any, alpha: float) -> torch.Tensor:
    """Last hidden state [B, L, H] of a padded input dict under ``mask`` at ``alpha``."""
    return model.encode(inputs["input_ids"], inputs["attention_mask"], mask=mask, alpha=alpha,
                        segment_ids=inputs.get("segment_ids"))


class CausalLMObjective(nn.Module):
    """Next-token loss (pretraining, SFT): ``loss(hidden, lm_head.weight, labels)``.

    Batch: ``input_ids``, ``attention_mask``, ``labels`` (-100 = not counted) [B, L] and, for
    packed rows, ``segment_ids`` (the document mask reads them).
    """

    def __init__(self, model: nn.Module, mask: Any, loss: nn.Module):
        super().__init__()
        self.model = model
        self.mask = mask
        self.loss = loss

    def forward(self, batch: dict, *, step: int, alpha: float) -> dict:
        hidden = model_encode(self.model, batch, self.mask, alpha)
        out = self.loss(hidden, self.model.get_output_embeddings().weight, batch["labels"])
        return {"loss": out.loss, "metrics": dict(out.metrics)}


def freeze_unused_head(model: nn.Module) -> None:
    """Embedding stages never use the LM head: an untied head gets ``requires_grad=False`` (so DDP
    does not wait for its gradient and the optimizer does not decay it); a tied one is the input
    embedding and stays trainable."""
    head = model.get_output_embeddings()
    if head is not None and head.weight is not model.get_input_embeddings().weight:
        head.weight.requires_grad_(False)


class EmbeddingObjective(nn.Module):
    """Contrastive objective of the weak and supervised stages.

    Batch: ``query`` / ``positive`` (and optional ``negative``, B·n rows query-major) input dicts,
    ``query_ids`` / ``positive_ids`` LongTensor[B], optional ``negative_ids`` [B, n],
    ``example_ids`` (list[str], for the miner) and optional ``sts`` (``s1``, ``s2``, ``scores``).

    The loss (kind ``contrastive_losses``) is called as its contract says:
    ``loss(q, p, n, query_ids=, positive_ids=, negative_ids=)``.

    * ``gather=True`` (weak stage on several ranks): queries, positives, negatives and their ids
      are all-gathered across ranks *with gradients*
      (:func:`conan_core.losses.gather.all_gather_with_grad`), so every query sees the global batch
      as in-batch negatives and, after DDP's average, the gradient equals the single-process one.
    * a loss with ``grad_cache_chunk`` is computed with GradCache
      (:func:`conan_core.train.grad_cache.grad_cache_step`): this objective then runs its own
      backward (``handles_backward``) and returns a detached loss.
    * an STS batch adds ``sts_weight * sts_loss(e1, e2, scores)`` (kind ``pair_losses``).
    * ``observations``: this rank's ``example_ids`` and the ``neg_scores`` [B, n] the loss computed
      (detached, float32, CPU), which the trainer hands to the data stream (the miner's input:
      no extra forward pass).
    """

    def __init__(self, model: nn.Module, pooler: nn.Module, mask: Any, loss: nn.Module, *,
                 sts_loss: nn.Module | None = None, sts_weight: float = 1.0, gather: bool = False,
                 packing: bool = False, pack_tokens: int | None = None):
        super().__init__()
        self.model = model
        self.pooler = pooler
        self.mask = mask
        self.loss = loss
        self.sts_loss = sts_loss
        self.sts_weight = float(sts_weight)
        self.gather = gather
        self.grad_cache_chunk = getattr(loss, "grad_cache_chunk", None)
        self.handles_backward = self.grad_cache_chunk is not None
        self._alpha = 0.0
        self.packing = bool(packing)
        self.pack_tokens = pack_tokens
        self._packed_mask = None
        if self.packing:
            from conan_core.model.packing import PackedMask

            self._packed_mask = PackedMask(mask)
        freeze_unused_head(model)

    def embed(self, inputs: dict, alpha: float) -> torch.Tensor:
        """Pooled float32 [B, H] embeddings of an input dict."""
        return self.embed_many([inputs], alpha)[0]

    def embed_many(self, inputs: list[dict], alpha: float) -> list[torch.Tensor]:
        """Pooled float32 [B_k, H] embeddings of several input dicts. With ``packing`` one packed
        forward encodes all of them (:mod:`conan_core.model.packing`: the same function as the
        padded forwards, up to float rounding); otherwise one padded forward per dict."""
        if not self.packing:  # forward and pool one dict at a time, the order of every earlier release
            return [self._pool(model_encode(self.model, x, self.mask, alpha), x) for x in inputs]
        from conan_core.model.packing import packed_hidden

        hiddens = packed_hidden(self.model, inputs, self._packed_mask, alpha, self.pack_tokens)
        return [self._pool(h, x) for h, x in zip(hiddens, inputs)]

    def _pool(self, hidden: torch.Tensor, inputs: dict) -> torch.Tensor:
        return self.pooler(hidden.float(), inputs["attention_mask"], inputs.get("pool_mask"))

    def _encode_chunk(self, inputs: dict) -> torch.Tensor:
        return self.embed(inputs, self._alpha)

    def forward(self, batch: dict, *, step: int, alpha: float, backward_scale: float = 1.0) -> dict:
        from conan_core.losses.gather import all_gather_no_grad, all_gather_with_grad, rank, world_size

        ids = {"query_ids": batch["query_ids"], "positive_ids": batch["positive_ids"],
               "negative_ids": batch.get("negative_ids")}
        metrics: dict[str, float] = {}
        sts_out = None
        if self.handles_backward:  # GradCache: encode in chunks, run the backward here
            from conan_core.train.grad_cache import grad_cache_step

            self._alpha = alpha
            out = grad_cache_step(self.loss, self._encode_chunk, batch["query"], batch["positive"],
                                  batch.get("negative"), chunk=self.grad_cache_chunk,
                                  backward_scale=backward_scale, **ids)
            loss = out.loss
            neg_scores = out.neg_scores
            if "sts" in batch and self.sts_loss is not None:
                sts_out = self._sts(batch["sts"], alpha)
                (self._weighted(sts_out.loss) * backward_scale).backward()
                loss = loss + self._weighted(sts_out.loss.detach())
        else:
            parts = [batch["query"], batch["positive"]] + ([batch["negative"]] if "negative" in batch else [])
            q, p, *rest = self.embed_many(parts, alpha)
            b = q.shape[0]
            n = rest[0].view(b, -1, q.shape[-1]) if rest else None
            w, r = world_size(), rank()
            if self.gather and w > 1:
                q, p = all_gather_with_grad(q), all_gather_with_grad(p)
                n = all_gather_with_grad(n) if n is not None else None
                ids = {k: all_gather_no_grad(v) if v is not None else None for k, v in ids.items()}
            out = self.loss(q, p, n, **ids)
            loss = out.loss
            neg_scores = out.neg_scores
            if neg_scores is not None and self.gather and w > 1:
                neg_scores = neg_scores[r * b:(r + 1) * b]  # this rank's own queries
            if "sts" in batch and self.sts_loss is not None:
                sts_out = self._sts(batch["sts"], alpha)
                loss = loss + self._weighted(sts_out.loss.to(loss.dtype))
        metrics.update(out.metrics)
        if sts_out is not None:
            metrics["cosent"] = float(sts_out.loss.detach())
        observations = None
        if neg_scores is not None:
            observations = {"example_ids": batch["example_ids"], "neg_scores": neg_scores.detach().float().cpu()}
        return {"loss": loss, "metrics": metrics, "observations": observations}

    def _weighted(self, value: torch.Tensor) -> torch.Tensor:
        # a weight of 1 adds no multiplication, so the default objective is bit-identical to a plain sum
        return value if self.sts_weight == 1.0 else self.sts_weight * value

    def _sts(self, sts: dict, alpha: float):
        e1, e2 = self.embed_many([sts["s1"], sts["s2"]], alpha)
        return self.sts_loss(e1, e2, sts["scores"])
