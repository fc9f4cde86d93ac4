"""Stage 4, supervised embedding training (RECIPE §2.4): retrieval, cross-lingual retrieval and
classification pairs in task-homogeneous batches, InfoNCE over the miner's hard negatives plus the
in-batch ones, MRL through the ``matryoshka`` loss, an STS batch with CoSENT every
``sts_every`` steps, and the bidirectional mask.

Hard negatives come from ``supervised.miner`` (DHNM ``dynamic_v2`` by default) over the candidate
pool ``RUN/mine/pool.jsonl`` (``conan mine``); without a mined pool, the supervised shards' own
``neg`` lists are the pool (then the miner's ``rank_start`` is set to 0: those lists are already
the chosen negatives, not a ranked search to skip the top of). The loss's ``neg_scores`` feed
``miner.observe`` every step (no extra forward pass); the miner's state is in every checkpoint.

Across ranks each rank trains on its own task batches (in-batch negatives stay within one task);
with the ``cbb`` loss (v1's cross-GPU batch balance) every rank reads the same queries and the
loss gathers the negatives of all ranks (use ``selection: shuffled`` in the miner so ranks draw
different negatives: its seed is offset by the rank).
"""

from __future__ import annotations

import logging
from typing import Any

from conan_core.train.stages.common import StageContext, StagePlan, embedder_settings, hidden_size, start_model

log = logging.getLogger("conan_core.train")


def innermost_loss(spec: Any) -> str:
    """The key of the loss at the bottom of wrapper losses (``cached``, ``matryoshka``)."""
    spec = {"type": spec} if isinstance(spec, str) else spec
    while isinstance(spec, dict) and isinstance(spec.get("loss"), (dict, str)):
        spec = {"type": spec["loss"]} if isinstance(spec["loss"], str) else spec["loss"]
    return spec["type"]


def build(ctx: StageContext) -> StagePlan:
    from conan_core.registries import REGISTRIES
    from conan_core.train.data import (
        SupervisedStream,
        build_source,
        file_hash,
        source_spec,
        sts_loader,
        supervised_pairs_loader,
    )
    from conan_core.train.objectives import EmbeddingObjective

    cfg, c = ctx.cfg, ctx.cfg.supervised
    model = start_model(ctx)
    h = hidden_size(model)
    pooler = REGISTRIES["poolers"].build(c.pooler, "supervised.pooler", hidden_size=h)
    _load_previous_pooler(ctx, pooler)
    mask = REGISTRIES["masks"].build(c.mask, "supervised.mask")
    loss = REGISTRIES["losses"].build(c.loss, "supervised.loss")
    cbb = innermost_loss(c.loss) == "cbb"
    sts_loss = REGISTRIES["losses"].build(c.sts_loss, "supervised.sts_loss") if c.sts_loss is not None else None

    miner, pool_file = build_miner(ctx)
    # cbb: every rank holds the same queries (its loss gathers the negatives of all ranks)
    src_kwargs = ctx.source_kwargs() if not cbb else {"rank": 0, "world_size": 1, "seed": cfg.seed}
    pairs_spec = source_spec(cfg, "supervised", ctx.run_dir, allow_data_change=ctx.allow_data_change)
    pairs = build_source(pairs_spec, path="supervised.source", **src_kwargs)
    sts_source = None
    if sts_loss is not None or cbb:
        sts_spec = source_spec(cfg, "sts", ctx.run_dir, allow_data_change=ctx.allow_data_change)
        from pathlib import Path

        if Path(sts_spec["path"]).exists():
            sts_source = build_source(sts_spec, path="supervised.sts", **ctx.source_kwargs())
        else:
            log.warning("supervised: no STS data at %s: training without the CoSENT term", sts_spec["path"])
    stream = SupervisedStream(cfg, supervised_pairs_loader(cfg, pairs, ctx.tokenizer),
                              sts_loader(cfg, sts_source, ctx.tokenizer) if sts_source is not None else None,
                              miner, ctx.tokenizer)
    objective = EmbeddingObjective(model, pooler, mask, loss, sts_loss=None if cbb else sts_loss, miner=miner,
                                   gather=False, sts_in_loss=cbb and sts_source is not None)
    parts = [pairs] + ([sts_source] if sts_source is not None else [])
    world = ctx.world(*parts, {"pool": file_hash(pool_file) if pool_file else "shards", "cbb": cbb,
                               "batch_size": c.batch_size, "sts_batch_size": c.sts_batch_size,
                               "max_length": c.max_length, "num_negatives": c.num_negatives,
                               "instruction": c.query_instruction})
    states = {"miner": miner} if miner is not None else {}
    return StagePlan(objective=objective, stream=stream, world=world, model=model, pooler=pooler, states=states,
                     alpha_fn=lambda step: mask.alpha(step, c.steps),
                     embedder=embedder_settings(ctx, c.pooler, c.mask, mask.alpha(c.steps, c.steps), loss, h),
                     finish=(lambda: {"miner": _scalars(miner.stats())}) if miner is not None else None)


def build_miner(ctx: StageContext):
    """``(miner or None, path of the mined pool or None)``; None when ``num_negatives`` is 0."""
    from conan_core.miners.pool import CandidatePool
    from conan_core.registries import REGISTRIES
    from conan_core.train.data import shard_pool

    c = ctx.cfg.supervised
    if c.num_negatives == 0:
        return None, None
    spec = dict(c.miner)
    fields = REGISTRIES["miners"].config_class(spec["type"]).model_fields
    if "num_negatives" in fields and "num_negatives" not in spec:
        spec["num_negatives"] = c.num_negatives
    if "seed" in fields and ctx.env.world_size > 1:
        spec["seed"] = int(spec.get("seed", 0)) + ctx.env.rank
    pool_file = ctx.run_dir / "mine" / "pool.jsonl"
    if spec["type"] == "in_batch":
        return REGISTRIES["miners"].build(spec, "supervised.miner"), None
    if pool_file.exists():
        pool = CandidatePool.load(pool_file)
        found = pool_file
    else:
        pool = shard_pool(ctx.cfg, ctx.run_dir)
        found = None
        if "rank_start" in fields:
            log.info("supervised: no mined pool at %s: using the shards' own negatives (miner rank_start 0)",
                     pool_file)
            spec["rank_start"] = 0
    return REGISTRIES["miners"].build(spec, "supervised.miner", pool=pool), found


def _load_previous_pooler(ctx: StageContext, pooler: Any) -> None:
    """Carry a trainable pooler's weights over from the weak stage when it used the same pooler."""
    import json

    from conan_core.registries import REGISTRIES
    from conan_core.train.stages.common import previous_stage

    if not any(True for _ in pooler.parameters()):
        return
    prev = previous_stage(ctx.cfg, "supervised")
    final = ctx.run_dir / prev / "final" if prev else None
    if final is None or not (final / "pooler.safetensors").is_file():
        return
    settings = json.loads((final / "embedder.json").read_text(encoding="utf-8"))
    if settings.get("pooler") != REGISTRIES["poolers"].resolve(ctx.cfg.supervised.pooler):
        return
    from safetensors.torch import load_file

    pooler.load_state_dict(load_file(str(final / "pooler.safetensors")))


def _scalars(stats: dict) -> dict:
    """The miner's scalar statistics (totals, counts, means); histograms stay in the metrics."""
    return {str(k): float(v) if isinstance(v, float) else v for k, v in stats.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}
