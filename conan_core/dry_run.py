"""``conan run PRESET --dry-run``: validate, build on the meta device, print size and memory plan."""

from __future__ import annotations

from conan_core.config import RunConfig


def dry_run_report(cfg: RunConfig, gpus: int = 8) -> str:
    """Validate every component, build the model on the meta device (no memory) and describe it."""
    from conan_core.builder import build_pipeline
    from conan_core.model.sizes import count_parameters, format_bytes, memory_plan

    pipe = build_pipeline(cfg)
    vocab = cfg.tokenizer.vocab_size
    model = pipe.backbone.build(vocab, meta=True)
    params = count_parameters(model, exclude_lm_head=True)
    total = count_parameters(model, exclude_lm_head=False)
    arch = model.config.to_dict()
    dtype = "fp32" if cfg.precision == "fp32" else "bf16"
    lines = [
        f"config: {cfg.name} (valid)",
        pipe.describe(),
        f"parameters: {params} ({params / 1e6:.1f}M without LM head, as the paper counts; "
        f"{total / 1e6:.1f}M trained)",
        f"architecture: layers {arch['num_hidden_layers']}, hidden {arch['hidden_size']}, heads "
        f"{arch['num_attention_heads']}/{arch['num_key_value_heads']} x {arch['head_dim']}, ffn "
        f"{arch['intermediate_size']}, vocab {vocab}, context {arch['max_position_embeddings']}",
        f"memory plan per GPU ({gpus} GPUs, {dtype} weights + fp32 AdamW states; activations not included):",
    ]
    for stage, label in ((0, "DDP"), (1, "ZeRO-1 (paper)"), (3, "FSDP2 full shard")):
        plan = memory_plan(arch, gpus, zero_stage=stage, dtype=dtype, vocab_size=vocab)
        lines.append(f"  {label:<17} weights {format_bytes(plan['weights']):>11}  grads "
                     f"{format_bytes(plan['grads']):>11}  optimizer {format_bytes(plan['optimizer']):>11}  "
                     f"total {format_bytes(plan['total']):>11}")
    return "\n".join(lines)
