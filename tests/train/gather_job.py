"""Run under ``torchrun --nproc_per_node 2``: the weak stage's cross-rank InfoNCE (embeddings gathered
with gradients) under DDP gives the single-process gradient of the global batch.

Rank r holds rows ``r*B .. r*B+B-1`` of a fixed global batch of 2B (query, positive, 1 negative)
pairs; rank 0 also computes the loss of the whole batch in one process (no gather) and writes both
gradients to ``OUT/grads.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch


def make_objective(gather: bool):
    from conan_core.registries import REGISTRIES
    from conan_core.train.objectives import EmbeddingObjective

    torch.manual_seed(0)
    model = REGISTRIES["backbones"].build({"type": "conan", "hidden_size": 16, "num_hidden_layers": 1,
                                           "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8,
                                           "intermediate_size": 32}).build(50)
    pooler = REGISTRIES["poolers"].build({"type": "mean"}, hidden_size=16)
    mask = REGISTRIES["masks"].build({"type": "soft"})
    loss = REGISTRIES["contrastive_losses"].build({"type": "info_nce"})
    return EmbeddingObjective(model, pooler, mask, loss, gather=gather)


def global_batch(n: int) -> dict:
    gen = torch.Generator().manual_seed(1)

    def rows(count):
        ids = torch.randint(7, 50, (count, 6), generator=gen)
        attn = torch.ones_like(ids)
        attn[::3, 4:] = 0  # some padding
        return {"input_ids": ids, "attention_mask": attn, "pool_mask": attn.clone()}

    q, p, neg = rows(n), rows(n), rows(n)
    pos_ids = torch.arange(n) + 1000
    pos_ids[1] = pos_ids[0]  # a duplicate positive: masked in both set-ups
    return {"query": q, "positive": p, "negative": neg, "query_ids": torch.arange(n),
            "positive_ids": pos_ids, "negative_ids": (torch.arange(n) + 5000)[:, None], "example_ids": []}


def shard(batch: dict, start: int, end: int) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, dict):
            out[k] = {kk: vv[start:end] for kk, vv in v.items()}
        elif isinstance(v, torch.Tensor):
            out[k] = v[start:end]
        else:
            out[k] = v
    return out


def main(out: Path) -> None:
    from torch.nn.parallel import DistributedDataParallel

    from conan_core.train import distributed as D

    env = D.init_distributed("cpu")
    b = 4
    batch = global_batch(2 * b)
    ddp = DistributedDataParallel(make_objective(gather=True))
    local = shard(batch, env.rank * b, (env.rank + 1) * b)
    ddp(local, step=1, alpha=0.5)["loss"].backward()
    grads = {n: p.grad.clone() for n, p in ddp.module.named_parameters() if p.grad is not None}
    if env.is_main:
        single = make_objective(gather=False)
        single(batch, step=1, alpha=0.5)["loss"].backward()
        ref = {n: p.grad.clone() for n, p in single.named_parameters() if p.grad is not None}
        torch.save({"ddp": grads, "single": ref}, out / "grads.pt")
    D.shutdown(env)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
