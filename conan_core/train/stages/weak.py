"""Stage 3, weakly-supervised embedding training (RECIPE §2.3): the SFT pairs as (query, positive),
InfoNCE with in-batch negatives (gathered over every rank), **the soft mask** with
``alpha = mask.alpha(step, steps)`` for 1-based step ``step`` (so the last step is fully
bidirectional, the mask of the next stage and of inference), and pairs a teacher scores below
``weak.teacher_min_score`` dropped.

Teacher filter: the teacher is ``weak.teacher`` (a conan run / export, a sentence-transformers
directory or ``package:NAME[/SUBDIR]``, see :mod:`conan_core.train.teacher`) or, by default, the
model this stage starts from, encoding with the stage's pooler and its mask at step 0 (a weak
filter: the paper uses a strong external embedder). Every pair is scored once, at stage start (each rank scores
its share, the dropped ids are gathered); ``weak/teacher.json`` records the threshold, the counts
and the dropped example ids, and a resumed run reads it instead of scoring again.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from conan_core.train import distributed as D
from conan_core.train.stages.common import StageContext, StageWiring, embedder_settings, hidden_size, write_json_atomic

log = logging.getLogger("conan_core.train")


def wire(ctx: StageContext, model: nn.Module, components: Any) -> StageWiring:
    from conan_core.train.data import build_source, source_spec
    from conan_core.train.objectives import EmbeddingObjective
    from conan_core.train.streams import weak_stream

    cfg, c = ctx.cfg, ctx.cfg.weak
    objective = EmbeddingObjective(model, components.pooler, components.mask, components.loss, gather=True,
                                   packing=c.packing, pack_tokens=c.pack_tokens)
    spec = source_spec(cfg, "weak", ctx.run_dir, allow_data_change=ctx.allow_data_change)
    teacher = teacher_filter(ctx, spec, objective, components.alpha(0))
    source = build_source(spec, path="weak.source", **ctx.source_kwargs())
    stream = weak_stream(cfg, source, ctx.tokenizer, set(teacher["dropped"]))
    world = ctx.world(source, {"batch_size": c.batch_size, "max_length": c.max_length,
                               "dropped": teacher["dropped"], "instruction": c.query_instruction})
    extra = {"teacher": {k: v for k, v in teacher.items() if k != "dropped"}}
    return StageWiring(objective=objective, stream=stream, world=world, model=model, pooler=components.pooler,
                       extra=extra, embedder=embedder_settings(ctx, components, hidden_size(model)))


def teacher_filter(ctx: StageContext, spec: dict, objective: Any, start_alpha: float) -> dict:
    """``{"threshold", "teacher", "scored", "dropped_count", "mean_score", "dropped": [ids]}``,
    computed once (every rank takes part) and cached in ``weak/teacher.json``."""
    import json

    c = ctx.cfg.weak
    path = ctx.stage_dir / "teacher.json"
    if c.teacher_min_score is None:
        return {"threshold": None, "teacher": None, "scored": 0, "dropped_count": 0, "mean_score": None,
                "dropped": []}
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    scores = _score_pairs(ctx, spec, objective, start_alpha)
    parts = [scores]
    if ctx.env.distributed:
        parts = [None] * ctx.env.world_size
        torch.distributed.all_gather_object(parts, scores)
    merged = {eid: s for part in parts for eid, s in part.items()}
    dropped = sorted(eid for eid, s in merged.items() if not s >= c.teacher_min_score)
    result = {"threshold": c.teacher_min_score, "teacher": c.teacher or "start model", "scored": len(merged),
              "dropped_count": len(dropped),
              "mean_score": (sum(merged.values()) / len(merged)) if merged else None, "dropped": dropped}
    if ctx.env.is_main:
        ctx.stage_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, result)
    D.barrier(ctx.env)
    mean = "n/a" if result["mean_score"] is None else f"{result['mean_score']:.3f}"
    log.info("weak: teacher %s scored %d pairs and dropped %d whose cosine(query, positive) is below %.2f "
             "(weak.teacher_min_score, RECIPE §2.3; mean cosine %s)", result["teacher"], result["scored"],
             result["dropped_count"], c.teacher_min_score, mean)
    return result


@torch.no_grad()
def _score_pairs(ctx: StageContext, spec: dict, objective: Any, alpha: float) -> dict[str, float]:
    """Cosine(query, positive) per example id of this rank's share of one pass over the pairs."""
    from conan_core.data.tokenize import PairTokenizer
    from conan_core.train.collate import collate_pairs, pad_id_of
    from conan_core.train.data import one_pass
    from conan_core.train.loop import autocast_dtype, move_to

    c = ctx.cfg.weak
    source = one_pass(spec, **ctx.source_kwargs())
    if c.teacher is not None:
        return _score_with_embedder(c.teacher, source, c, ctx.env)
    tok = PairTokenizer(ctx.tokenizer, c.max_length, c.query_instruction)
    pad = pad_id_of(ctx.tokenizer)
    device = ctx.env.device
    objective.to(device)
    was_training = objective.training
    objective.eval()
    amp = autocast_dtype(ctx.cfg.precision, device)
    out: dict[str, float] = {}
    items: list[dict] = []

    def flush():
        batch = move_to(collate_pairs(items, pad), device)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            q = objective.embed(batch["query"], alpha)
            p = objective.embed(batch["positive"], alpha)
        cos = torch.nn.functional.cosine_similarity(q.float(), p.float(), dim=-1)
        out.update(zip(batch["example_ids"], cos.tolist()))
        items.clear()

    for sample in source:
        items.append(tok(sample))
        if len(items) == c.batch_size:
            flush()
    if items:
        flush()
    objective.train(was_training)
    return out


def _score_with_embedder(teacher: str, source: Any, c: Any, env: D.DistEnv) -> dict[str, float]:
    """Scores from an external teacher (:mod:`conan_core.train.teacher`)."""
    from conan_core.data.samples import example_id_of
    from conan_core.train.teacher import Teacher, score_pairs

    samples = list(source)
    if not samples:
        return {}
    model = Teacher(teacher, device=str(env.device), batch_size=c.batch_size)
    return score_pairs(model, samples, [example_id_of(s, i) for i, s in enumerate(samples)], c.query_instruction)
