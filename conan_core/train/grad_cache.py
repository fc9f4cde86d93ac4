"""GradCache: a contrastive step over a batch too large to encode with grad at once.

Used by :class:`~conan_core.train.objectives.EmbeddingObjective` when the stage's contrastive loss
asks for it (``grad_cache_chunk``, set by the ``cached`` loss wrapper). The loss itself keeps the
``contrastive_losses`` contract; only how the embeddings are computed changes.

Pass 1 embeds every chunk of ``chunk`` rows without grad, recording the torch RNG state (CPU and
initialised CUDA devices) before each chunk. The loss then runs on the cached embeddings (leaves)
and its backward gives d loss / d embedding. Pass 2 re-encodes each chunk with grad under its
recorded RNG state — dropout draws the same masks, so the recomputed embeddings equal pass 1's —
and backpropagates the cached embedding gradients into the parameters. Peak activation memory is
one chunk's instead of the batch's; compute is about one extra forward. The global RNG ends where
a single plain forward would leave it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Callable, Iterator, Mapping

import torch

from conan_core.losses.base import LossInputError, LossOutput

Inputs = Mapping[str, Any] | torch.Tensor


def grad_cache_step(loss_fn: Callable[..., LossOutput], encode_fn: Callable[[Inputs], torch.Tensor],
                    query_inputs: Inputs, positive_inputs: Inputs, negative_inputs: Inputs | None = None, *,
                    chunk: int, backward_scale: float = 1.0,
                    no_sync: Callable[[], AbstractContextManager] | None = None,
                    **loss_kwargs: Any) -> LossOutput:
    """Run ``loss_fn(query, positive, negatives, **loss_kwargs)`` on embeddings computed in chunks and
    accumulate the gradients of ``backward_scale * loss`` into the parameters (module docstring).

    * ``encode_fn(inputs_chunk) -> Tensor [b, H]``: the model forward + pooling for a chunk.
    * ``query_inputs`` / ``positive_inputs``: dicts of tensors with batch dim B first (or one
      tensor); ``negative_inputs``: the same with batch dim B*n, query-major (rows i*n .. i*n+n-1
      are query i's negatives), reshaped to ``[B, n, H]`` for the loss. Non-tensor dict values are
      passed to every chunk unchanged.
    * ``no_sync``: optional context factory (DDP's ``model.no_sync``) entered for every chunk's
      backward but the last, so gradients are all-reduced once.

    Returns the loss's output with the loss detached (the gradients are already accumulated) and
    ``chunks`` added to its metrics.
    """
    b = _batch_size("query_inputs", query_inputs)
    b_pos = _batch_size("positive_inputs", positive_inputs)
    if b_pos != b:
        raise LossInputError(f"grad cache: positive_inputs has batch {b_pos}, query_inputs {b}; they must match")
    groups = [query_inputs, positive_inputs]
    n = 0
    if negative_inputs is not None:
        rows = _batch_size("negative_inputs", negative_inputs)
        if rows % b:
            raise LossInputError(f"grad cache: negative_inputs has {rows} rows, not a multiple of the {b} queries "
                                 "(expected B * n, query-major)")
        n = rows // b
        if n:
            groups.append(negative_inputs)

    size = int(chunk)
    chunks: list[tuple[int, int, int, _RngState]] = []  # (group, start, end, rng before the chunk)
    embeddings: list[list[torch.Tensor]] = [[] for _ in groups]
    with torch.no_grad():
        for g, inputs in enumerate(groups):
            total = _batch_size("inputs", inputs)
            for start in range(0, total, size):
                end = min(start + size, total)
                chunks.append((g, start, end, _RngState.capture()))
                embeddings[g].append(encode_fn(_slice(inputs, start, end)))
    cached = [torch.cat(e).detach().requires_grad_(True) for e in embeddings]

    with torch.enable_grad():
        args = [cached[0], cached[1]]
        if n:
            args.append(cached[2].reshape(b, n, -1))
        out = loss_fn(*args, **loss_kwargs)
        (out.loss * backward_scale).backward()
    grads = [c.grad if c.grad is not None else torch.zeros_like(c) for c in cached]

    for k, (g, start, end, state) in enumerate(chunks):
        last = k == len(chunks) - 1
        sync = no_sync() if no_sync is not None and not last else nullcontext()
        with sync, state.replay(), torch.enable_grad():
            emb = encode_fn(_slice(groups[g], start, end))
            emb.backward(grads[g][start:end].to(emb.dtype))
    return LossOutput(loss=out.loss.detach(), neg_scores=out.neg_scores,
                      metrics={**out.metrics, "chunks": float(len(chunks))})


class _RngState:
    """torch's CPU RNG state and that of every initialised CUDA device, captured at one moment."""

    def __init__(self, cpu: torch.Tensor, cuda: list[torch.Tensor]):
        self.cpu = cpu
        self.cuda = cuda

    @classmethod
    def capture(cls) -> "_RngState":
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
        return cls(torch.get_rng_state(), cuda)

    @contextmanager
    def replay(self) -> Iterator[None]:
        """Run the block from this state, then put the global RNG back where it was."""
        with torch.random.fork_rng(devices=list(range(len(self.cuda)))):
            torch.set_rng_state(self.cpu)
            if self.cuda:
                torch.cuda.set_rng_state_all(self.cuda)
            yield


def _batch_size(name: str, inputs: Inputs) -> int:
    if isinstance(inputs, torch.Tensor):
        return inputs.shape[0]
    if not isinstance(inputs, Mapping):
        raise LossInputError(f"grad cache: {name} must be a dict of tensors (batch dim first) or a tensor, "
                             f"got {type(inputs).__name__}")
    sizes = {k: v.shape[0] for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    if not sizes or len(set(sizes.values())) != 1:
        raise LossInputError(f"grad cache: {name} needs tensors sharing their first (batch) dim, got sizes {sizes}")
    return next(iter(sizes.values()))


def _slice(inputs: Inputs, start: int, end: int) -> Inputs:
    if isinstance(inputs, torch.Tensor):
        return inputs[start:end]
    return {k: v[start:end] if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
