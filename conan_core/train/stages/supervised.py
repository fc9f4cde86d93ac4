"""Stage 4, supervised embedding training (RECIPE §2.4): retrieval, cross-lingual retrieval and
classification pairs in task-homogeneous batches, InfoNCE over the miner's hard negatives plus the
in-batch ones, MRL through the ``matryoshka`` loss, an STS batch with CoSENT every
``sts_every`` steps, and the bidirectional mask.

Hard negatives come from ``supervised.miner`` (DHNM ``dynamic_v2`` by default) over the candidate
pool ``RUN/mine/pool.jsonl`` (``conan mine``); without a mined pool, the supervised shards' own
``neg`` lists are the pool (``ranked_pool=False``: those lists are already the chosen negatives,
not a ranked search to skip the top of). The miner belongs to the data stream
(:class:`~conan_core.train.streams.SupervisedStream`): the objective returns the ``neg_scores`` its
loss computed, the trainer hands them to the stream after each micro-batch (no extra forward
pass), and the miner's state is part of the stream's state in every checkpoint.

Across ranks each rank trains on its own task batches (in-batch negatives stay within one task);
with a loss that declares ``shared_queries`` (``cbb``, v1's cross-GPU batch balance) every rank
reads the same queries and the loss gathers the negatives of all ranks (use ``selection:
shuffled`` in the miner so ranks draw different negatives: its seed is offset by the rank).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from conan_core.train.stages.common import StageContext, StageWiring, embedder_settings, hidden_size

log = logging.getLogger("conan_core.train")


def wire(ctx: StageContext, model: nn.Module, components: Any) -> StageWiring:
    from conan_core.train.data import build_source, file_hash, source_spec
    from conan_core.train.objectives import EmbeddingObjective
    from conan_core.train.streams import SupervisedStream, sts_loader, supervised_pairs_loader

    cfg, c = ctx.cfg, ctx.cfg.supervised
    pooler = components.pooler
    _load_previous_pooler(ctx, pooler, components.specs["pooler"])
    # a loss that contrasts across ranks (cbb) needs the same queries on every rank
    shared = bool(components.loss.shared_queries)
    objective = EmbeddingObjective(model, pooler, components.mask, components.loss,
                                   sts_loss=components.sts_loss, sts_weight=c.sts_weight, gather=False,
                                   packing=c.packing, pack_tokens=c.pack_tokens)
    miner, pool_file, remine = build_miner(ctx, components, objective)
    src_kwargs = ctx.source_kwargs() if not shared else {"rank": 0, "world_size": 1, "seed": cfg.seed}
    pairs_spec = source_spec(cfg, "supervised", ctx.run_dir, allow_data_change=ctx.allow_data_change)
    pairs = build_source(pairs_spec, path="supervised.source", **src_kwargs)
    sts_source = None
    if components.sts_loss is not None:
        sts_spec = source_spec(cfg, "sts", ctx.run_dir, allow_data_change=ctx.allow_data_change)
        # a configured sts_source must exist (its reader says so); the default sts/ is optional
        if c.sts_source is not None or Path(sts_spec["path"]).exists():
            sts_source = build_source(sts_spec, path="supervised.sts", **ctx.source_kwargs())
        else:
            log.warning("supervised: no STS data at %s: training without the STS term", sts_spec["path"])
    stream = SupervisedStream(cfg, supervised_pairs_loader(cfg, pairs, ctx.tokenizer),
                              sts_loader(cfg, sts_source, ctx.tokenizer) if sts_source is not None else None,
                              miner, ctx.tokenizer)
    if sts_source is None:
        objective.sts_loss = None  # no STS batches will come
    parts = [pairs] + ([sts_source] if sts_source is not None else [])
    world = ctx.world(*parts, {"pool": file_hash(pool_file) if pool_file else "shards", "shared_queries": shared,
                               "batch_size": c.batch_size, "sts_batch_size": c.sts_batch_size,
                               "max_length": c.max_length, "num_negatives": c.num_negatives,
                               "instruction": c.query_instruction})
    return StageWiring(objective=objective, stream=stream, world=world, model=model, pooler=pooler,
                       embedder=embedder_settings(ctx, components, hidden_size(model)),
                       finish=(lambda: _finish(miner, stream, remine)) if miner is not None else None)


def build_miner(ctx: StageContext, components: Any, objective: Any):
    """``(miner or None, path of the mined pool or None, Remine or None)``: the miner of
    ``components.miner`` (None when ``num_negatives`` is 0) over ``RUN/mine/pool.jsonl`` when it
    exists (a ranked search), else over the shards' own ``neg`` lists (already chosen negatives: no
    top ranks skipped); a miner that re-mines gets a :class:`~conan_core.train.remine.Remine` over
    the supervised corpus, encoding with ``objective`` (the weights being trained)."""
    from conan_core.miners.pool import CandidatePool
    from conan_core.registries import REGISTRIES
    from conan_core.train.data import shard_pool

    plan = components.miner
    if plan is None:
        return None, None, None
    cls = REGISTRIES["miners"].get(plan.spec["type"])
    remine = _remine(ctx, components, objective) if cls.remines else None
    if not cls.needs_pool:
        return plan.build(pool=None, rank=ctx.env.rank, remine_fn=remine), None, remine
    pool_file = ctx.run_dir / "mine" / "pool.jsonl"
    if pool_file.exists():
        pool = CandidatePool.load(pool_file)
        return plan.build(pool=pool, rank=ctx.env.rank, remine_fn=remine), pool_file, remine
    log.info("supervised: no mined pool at %s: using the shards' own negatives (no ranks skipped)", pool_file)
    pool = shard_pool(ctx.cfg, ctx.run_dir)
    return plan.build(pool=pool, rank=ctx.env.rank, ranked_pool=False, remine_fn=remine), None, remine


def _remine(ctx: StageContext, components: Any, objective: Any):
    from conan_core.train.data import supervised_examples
    from conan_core.train.remine import Remine

    cfg = ctx.cfg
    queries, positives, corpus = supervised_examples(cfg, ctx.run_dir)
    return Remine(objective, ctx.tokenizer, queries, positives, corpus, top_k=cfg.mine.top_k,
                  max_length=cfg.supervised.max_length, alpha=components.alpha(cfg.supervised.steps),
                  batch_size=cfg.mine.batch_size, index_kind=cfg.mine.index)


def _finish(miner: Any, stream: Any, remine: Any) -> dict:
    out = {"miner": _scalars(miner.stats())}
    if stream.first_step_ranks:
        out["first_step_mean_negative_rank"] = sum(stream.first_step_ranks) / len(stream.first_step_ranks)
    if remine is not None:
        out["remine"] = {"calls": remine.calls, "seconds": round(remine.seconds, 3)}
    return out


def _load_previous_pooler(ctx: StageContext, pooler: Any, spec: dict) -> None:
    """Carry a trainable pooler's weights over from the weak stage when it used the same pooler
    (``spec``: this stage's resolved pooler spec)."""
    import json

    from conan_core.train.stages.common import previous_stage

    if not any(True for _ in pooler.parameters()):
        return
    prev = previous_stage(ctx.cfg, "supervised")
    final = ctx.run_dir / prev / "final" if prev else None
    if final is None or not (final / "pooler.safetensors").is_file():
        return
    settings = json.loads((final / "embedder.json").read_text(encoding="utf-8"))
    if settings.get("pooler") != spec:
        return
    from safetensors.torch import load_file

    pooler.load_state_dict(load_file(str(final / "pooler.safetensors")))


def _scalars(stats: dict) -> dict:
    """The miner's scalar statistics (totals, counts, means); histograms stay in the metrics."""
    return {str(k): float(v) if isinstance(v, float) else v for k, v in stats.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}
