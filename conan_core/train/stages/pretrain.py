"""Stage 1, LLM pretraining (RECIPE §2.1): next-token loss on packed text shards with the
``document`` mask (documents in one packed row never attend to each other)."""

from __future__ import annotations

from typing import Any

from torch import nn

from conan_core.train.stages.common import StageContext, StageWiring


def wire(ctx: StageContext, model: nn.Module, components: Any) -> StageWiring:
    from conan_core.train.data import build_source, source_spec
    from conan_core.train.objectives import CausalLMObjective
    from conan_core.train.streams import docs_stream, pretrain_stream

    cfg, c = ctx.cfg, ctx.cfg.pretrain
    source = build_source(source_spec(cfg, "pretrain", ctx.run_dir, allow_data_change=ctx.allow_data_change),
                          path="pretrain.source", **ctx.source_kwargs())
    stream = pretrain_stream(cfg, source, ctx.tokenizer) if c.packing else docs_stream(cfg, source, ctx.tokenizer)
    world = ctx.world(source, {"packing": c.packing, "batch_size": c.batch_size, "max_length": c.max_length})
    return StageWiring(objective=CausalLMObjective(model, components.mask, components.loss), stream=stream,
                       world=world, model=model)
