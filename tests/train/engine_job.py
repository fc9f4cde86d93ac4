"""A tiny, self-contained training job for the engine tests (run as a script or imported).

``python engine_job.py '{"out": DIR, "steps": 12, ...}'`` trains :class:`TinyObjective` on a
synthetic sharded stream with :class:`conan_core.train.loop.Trainer`, then writes ``final.pt``
(rank 0: parameters, optimizer state, and the RNG draws of the last step) and prints a JSON summary.
Under ``torchrun`` every rank runs it (gloo). Faults come from ``CONAN_FAULT`` as in real stages.

Every random source a real stage touches is exercised, so an exact resume needs all of them
restored: python ``random`` and numpy pick the sequence window, the data generator perturbs tokens,
torch's global RNG drives dropout.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

VOCAB = 61
SEQ = 12


def shard_keys(shards: int, per_shard: int) -> list[tuple[str, str]]:
    """The synthetic shard layout of RELIABILITY's harness: keys ``s{shard:03d}_{i:04d}``."""
    return [(f"shard-{s:03d}.tar", f"s{s:03d}_{i:04d}") for s in range(shards) for i in range(per_shard)]


class SyntheticStream:
    """Batches from this rank's shards (shard s goes to rank s % world_size), looping over epochs.

    Sample tokens derive from the key; python/numpy RNG choose a window offset and the data
    generator adds a perturbation, so the batch content depends on every RNG being restored.
    """

    def __init__(self, shards: int, per_shard: int, batch_size: int, rank: int, world_size: int,
                 generator: torch.Generator):
        mine = [s for s in range(shards) if s % world_size == rank]
        self.samples = [(u, k) for u, k in shard_keys(shards, per_shard) if int(k[1:4]) in mine]
        if not self.samples:
            raise ValueError(f"rank {rank} has no shard (shards={shards}, world_size={world_size})")
        self.batch_size = batch_size
        self.gen = generator
        self.epoch = 0
        self.pos = 0
        self.served = 0

    def next_batch(self) -> dict:
        keys, rows = [], []
        for _ in range(self.batch_size):
            if self.pos >= len(self.samples):
                self.epoch += 1
                self.pos = 0
            url, key = self.samples[self.pos]
            self.pos += 1
            keys.append((url, key))
            base = sum(map(ord, key))
            offset = random.randrange(5) + int(np.random.randint(0, 3))
            row = torch.arange(SEQ + 1) * (base % 7 + 1) + base + offset
            row = (row + torch.randint(0, 2, (SEQ + 1,), generator=self.gen)) % VOCAB
            rows.append(row)
        self.served += len(keys)
        ids = torch.stack(rows)
        return {"input_ids": ids, "keys": keys, "tokens": int(ids.numel())}

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "served": self.served}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos, self.served = state["epoch"], state["pos"], state["served"]

    def counters(self) -> dict:
        return {"samples": self.served, "epochs": self.epoch}


class TinyObjective(nn.Module):
    """Next-token prediction with an embedding, a norm, a biased linear layer and dropout."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.embed_tokens = nn.Embedding(VOCAB, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(hidden, VOCAB, bias=False)

    def forward(self, batch: dict, *, step: int, alpha: float) -> dict:
        ids = batch["input_ids"]
        x = self.drop(torch.tanh(self.proj(self.norm(self.embed_tokens(ids[:, :-1])))))
        logits = self.head(x)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB).float(), ids[:, 1:].reshape(-1))
        # bf16_weights: the dtype FSDP2 all-gathered the weights in for this forward (1.0 = bf16)
        return {"loss": loss, "metrics": {"alpha_seen": alpha,
                                          "bf16_weights": float(self.proj.weight.dtype == torch.bfloat16)}}


def build(cfg: dict, env=None):
    """``(trainer, data_generator)`` for ``cfg``: ``out``, ``steps`` and optionally ``grad_accum``,
    ``lr``, ``batch_size``, ``shards``, ``per_shard``, ``checkpoint_every``, ``keep``, ``nan_policy``,
    ``resume``, ``allow_data_change``, ``fallback``, ``parallel``, ``fingerprint``, ``num_workers``
    (the last two only enter the checkpoint's world), ``seed``, ``precision`` (default fp32) and
    ``fsdp_mixed_precision`` (default true)."""
    from conan_core.config import StageConfig
    from conan_core.registries import REGISTRIES
    from conan_core.train import distributed as D
    from conan_core.train.loop import RunFlags, Trainer
    from conan_core.train.rng import seed_everything

    env = env or D.DistEnv()
    gen = seed_everything(cfg.get("seed", 0), env.rank)
    objective = TinyObjective()
    stream = SyntheticStream(cfg.get("shards", 8), cfg.get("per_shard", 24), cfg.get("batch_size", 4),
                             env.rank, env.world_size, gen)
    settings = StageConfig(
        steps=cfg["steps"], grad_accum=cfg.get("grad_accum", 2), lr=cfg.get("lr", 3e-3), warmup_ratio=0.2,
        lr_decay="cosine", weight_decay=0.01, max_grad_norm=1.0, nan_policy=cfg.get("nan_policy", "stop"),
        checkpoint_every=cfg.get("checkpoint_every", 3), keep_checkpoints=cfg.get("keep", 10), log_every=1)
    flags = RunFlags(resume=cfg.get("resume", True), allow_data_change=cfg.get("allow_data_change", False),
                     fallback_checkpoint=cfg.get("fallback", False), progress=False)
    world = {"data_fingerprint": cfg.get("fingerprint", "synthetic-v1"), "world_size": env.world_size,
             "num_workers": cfg.get("num_workers", 0)}
    trainer = Trainer(objective, stream, settings, Path(cfg["out"]), name="engine",
                      optimizer=REGISTRIES["optimizers"].build("adamw"), alpha_fn=lambda s: s / cfg["steps"],
                      precision=cfg.get("precision", "fp32"), parallel=cfg.get("parallel", "auto"), flags=flags,
                      env=env, world=world, data_generator=gen,
                      fsdp_mixed_precision=cfg.get("fsdp_mixed_precision", True))
    return trainer, gen


def run(cfg: dict) -> dict:
    """Build and fit under the torchrun environment (deterministic algorithms on)."""
    from conan_core.train import distributed as D

    torch.use_deterministic_algorithms(True)
    env = D.init_distributed("cpu")
    try:
        trainer, gen = build(cfg, env)
        summary = trainer.fit()
        # the RNG draws right after the last step: equal only if every generator was restored
        draws = [random.random(), float(np.random.rand()), torch.rand(2).tolist(),
                 torch.rand(1, generator=gen).tolist()]
        summary["draws"] = draws
        summary["rank"] = env.rank
        # full (unsharded) states: equal to the plain ones for DDP, gathered for FSDP2
        params = D.full_model_state(trainer.raw, trainer.parallel)
        optim = D.full_optimizer_state(trainer.raw, trainer.optimizer, trainer.parallel)
        if env.is_main:
            torch.save({"params": {k: v.detach().clone() for k, v in params.items()}, "optimizer": optim,
                        "draws": draws, "parallel": trainer.parallel}, Path(cfg["out"]) / "final.pt")
    except BaseException:
        D.shutdown(env, wait=False)
        raise
    D.shutdown(env)
    return summary


if __name__ == "__main__":
    result = run(json.loads(sys.argv[1]))
    # one write of the whole line: ranks share stdout, and print() writes the text and the newline apart
    sys.stdout.write("SUMMARY " + json.dumps(result) + "\n")
    sys.stdout.flush()
