"""Stage 2, LLM SFT (RECIPE §2.2): causal next-token loss on (instruction + input, output) pairs,
counted on the output tokens only (the prompt's labels are -100)."""

from __future__ import annotations

from typing import Any

from torch import nn

from conan_core.train.stages.common import StageContext, StageWiring


def wire(ctx: StageContext, model: nn.Module, components: Any) -> StageWiring:
    from conan_core.train.data import build_source, source_spec
    from conan_core.train.objectives import CausalLMObjective
    from conan_core.train.streams import sft_stream

    cfg, c = ctx.cfg, ctx.cfg.sft
    source = build_source(source_spec(cfg, "sft", ctx.run_dir, allow_data_change=ctx.allow_data_change),
                          path="sft.source", **ctx.source_kwargs())
    world = ctx.world(source, {"batch_size": c.batch_size, "max_length": c.max_length})
    return StageWiring(objective=CausalLMObjective(model, components.mask, components.loss),
                       stream=sft_stream(cfg, source, ctx.tokenizer), world=world, model=model)
