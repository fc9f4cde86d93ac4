"""Stage 1, LLM pretraining (RECIPE §2.1): next-token loss on packed text shards with the
``document`` mask (documents in one packed row never attend to each other)."""

from __future__ import annotations

from conan_core.train.stages.common import StageContext, StagePlan, start_model


def build(ctx: StageContext) -> StagePlan:
    from conan_core.registries import REGISTRIES
    from conan_core.train.data import build_source, docs_stream, pretrain_stream, source_spec
    from conan_core.train.objectives import CausalLMObjective

    cfg, c = ctx.cfg, ctx.cfg.pretrain
    model = start_model(ctx)
    mask = REGISTRIES["masks"].build(c.mask, "pretrain.mask")
    loss = REGISTRIES["losses"].build(c.loss, "pretrain.loss")
    source = build_source(source_spec(cfg, "pretrain", ctx.run_dir, allow_data_change=ctx.allow_data_change),
                          path="pretrain.source", **ctx.source_kwargs())
    stream = pretrain_stream(cfg, source, ctx.tokenizer) if c.packing else docs_stream(cfg, source, ctx.tokenizer)
    world = ctx.world(source, {"packing": c.packing, "batch_size": c.batch_size, "max_length": c.max_length})
    return StagePlan(objective=CausalLMObjective(model, mask, loss), stream=stream, world=world,
                     alpha_fn=lambda step: mask.alpha(step, c.steps), model=model)
