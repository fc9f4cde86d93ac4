"""Two-rank gloo worker for test_distributed_gather.py; run as ``torchrun --nproc_per_node=2 gather_worker.py OUT``.

Each rank writes ``OUT/rank{r}.pt`` with the gradients it computed; the test compares them with the
single-process global batch built by :func:`inputs` (shared, so both sides see the same numbers).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

WORLD = 2


def inputs(world: int = WORLD) -> dict:
    """Every tensor of both checks, for all ranks (float64, fixed seeds)."""
    g = torch.Generator().manual_seed(0)
    rnd = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    b, n = 4, 3
    return {
        # all_gather_with_grad: rank r holds x[r]; rank s's loss is sum(sin(gathered * coef[s]))
        "x": rnd(world, 3, 5), "coef": rnd(world, world * 3, 5),
        # cbb: shared queries / positives, per-rank negatives and STS pairs, raw encoder inputs
        "q": rnd(b, 6), "p": rnd(b, 6), "neg": rnd(world, b, n, 6),
        "s1": rnd(world, 5, 6), "s2": rnd(world, 5, 6),
        "scores": torch.rand(world, 5, generator=g, dtype=torch.float64),
        "positive_ids": torch.tensor([1, 2, 3, 1]),
        # rank 1 holds a copy of query 0's positive text (id 1): masked through the gathered ids
        "negative_ids": torch.tensor([[[10, 11, 12], [13, 14, 15], [16, 17, 18], [19, 20, 21]],
                                      [[1, 23, 24], [25, 26, 27], [28, 3, 30], [31, 32, 33]]]),
    }


def encoder() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Linear(6, 5).double()


def main(out_dir: str) -> None:
    from conan_core.losses.base import LossInputError
    from conan_core.losses.gather import all_gather_with_grad
    from conan_core.registries import REGISTRIES

    dist.init_process_group("gloo")
    r, w = dist.get_rank(), dist.get_world_size()
    data = inputs(w)
    out: dict = {}

    x = data["x"][r].clone().requires_grad_(True)
    gathered = all_gather_with_grad(x)
    (gathered * data["coef"][r]).sin().sum().backward()
    out["gathered"], out["gather_grad"] = gathered.detach(), x.grad

    # the rejected alternative: no-grad gather, then splice the local tensor back in
    y = data["x"][r].clone().requires_grad_(True)
    parts = [torch.empty_like(y) for _ in range(w)]
    dist.all_gather(parts, y.detach())
    parts[r] = y
    (torch.cat(parts) * data["coef"][r]).sin().sum().backward()
    out["splice_grad"] = y.grad

    enc = encoder()
    loss = REGISTRIES["contrastive_losses"].build("cbb")
    res = loss(enc(data["q"]), enc(data["p"]), enc(data["neg"][r]),
               positive_ids=data["positive_ids"], negative_ids=data["negative_ids"][r])
    # v1's objective as the supervised stage computes it (preset tiny-cbb: sts_weight 0.8)
    sts = REGISTRIES["pair_losses"].build("cosent")(enc(data["s1"][r]), enc(data["s2"][r]), data["scores"][r])
    total = res.loss + 0.8 * sts.loss
    total.backward()
    for p in enc.parameters():  # what DDP does: average the gradients over ranks
        dist.all_reduce(p.grad)
        p.grad /= w
    out["cbb_loss"] = total.detach()
    out["cbb_grads"] = [p.grad for p in enc.parameters()]
    out["cbb_neg_scores"] = res.neg_scores
    out["cbb_masked"] = res.metrics["masked"]

    q = torch.zeros(4, 5, dtype=torch.float64)
    try:
        loss(q, q, torch.zeros(4, 3 if r == 0 else 2, 5, dtype=torch.float64))
        out["mismatch"] = "no error"
    except LossInputError as exc:
        out["mismatch"] = str(exc)

    torch.save(out, Path(out_dir) / f"rank{r}.pt")
    # meet before tearing gloo down: a rank that destroys its group while its peer still uses the
    # connection makes the peer abort ("terminate called without an active exception")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
