"""Stage 2, LLM SFT (RECIPE §2.2): causal next-token loss on (instruction + input, output) pairs,
counted on the output tokens only (the prompt's labels are -100)."""

from __future__ import annotations

from conan_core.train.stages.common import StageContext, StagePlan, start_model


def build(ctx: StageContext) -> StagePlan:
    from conan_core.registries import REGISTRIES
    from conan_core.train.data import build_source, sft_stream, source_spec
    from conan_core.train.objectives import CausalLMObjective

    cfg, c = ctx.cfg, ctx.cfg.sft
    model = start_model(ctx)
    mask = REGISTRIES["masks"].build(c.mask, "sft.mask")
    loss = REGISTRIES["losses"].build(c.loss, "sft.loss")
    source = build_source(source_spec(cfg, "sft", ctx.run_dir, allow_data_change=ctx.allow_data_change),
                          path="sft.source", **ctx.source_kwargs())
    world = ctx.world(source, {"batch_size": c.batch_size, "max_length": c.max_length})
    return StagePlan(objective=CausalLMObjective(model, mask, loss), stream=sft_stream(cfg, source, ctx.tokenizer),
                     world=world, alpha_fn=lambda step: mask.alpha(step, c.steps), model=model)
