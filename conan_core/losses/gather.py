"""Cross-rank gathers for losses whose denominator spans every rank (cbb).

Why a differentiable all-gather and not the common "gather without grad, then splice the local
tensor back into its own slot": the splice keeps only the gradient that *this* rank's loss sends
to its own slice and drops what the other ranks' losses send to it. In cbb every rank computes the
same InfoNCE over the same (duplicated) queries and positives plus everyone's negatives. After DDP
averages gradients over W ranks, the splice would weight the negatives' share by 1/W against the
queries' share: a silently wrong gradient. ``torch.distributed.nn.functional.all_gather`` is
differentiable: its backward gives each rank the sum, over all ranks' losses, of the gradient that
flows into that rank's slice, so after DDP's average the parameter gradient equals the
single-process gradient of the global batch. tests/losses/test_distributed_gather.py checks both
facts on 2 gloo ranks.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def distributed_ready() -> bool:
    """True when torch.distributed is built in and a default process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if distributed_ready() else 1


def rank() -> int:
    return dist.get_rank() if distributed_ready() else 0


def all_gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` from every rank along dim 0 (rank order), differentiably.

    ``t``: any tensor with the same shape and dtype on every rank. Returns ``[W * t.shape[0], ...]``;
    the slice ``[r * t.shape[0] : (r + 1) * t.shape[0]]`` is rank r's tensor. In backward, each rank
    receives the sum over all ranks of the gradient flowing into its own slice. Without an
    initialised process group (single process) this is the identity: world of 1.
    Every rank must call it (a collective): a rank that skips it hangs the others.
    """
    if not distributed_ready() or dist.get_world_size() == 1:
        return t
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(t.contiguous()), 0)


def all_gather_no_grad(t: torch.Tensor) -> torch.Tensor:
    """Like :func:`all_gather_with_grad` for tensors that need no gradient (ids, masks)."""
    if not distributed_ready() or dist.get_world_size() == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, 0)
