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
        f"memory plan per GPU ({gpus} GPUs, {dtype} weights + fp32 AdamW states; activations below):",
    ]
    for stage, label in ((0, "DDP"), (1, "ZeRO-1 (paper)"), (3, "FSDP2 full shard")):
        plan = memory_plan(arch, gpus, zero_stage=stage, dtype=dtype, vocab_size=vocab)
        lines.append(f"  {label:<17} weights {format_bytes(plan['weights']):>11}  grads "
                     f"{format_bytes(plan['grads']):>11}  optimizer {format_bytes(plan['optimizer']):>11}  "
                     f"total {format_bytes(plan['total']):>11}")
    lines.extend(activation_lines(cfg, arch, dtype))
    return "\n".join(lines)


def activation_lines(cfg: RunConfig, arch: dict, dtype: str) -> list[str]:
    """Per stage, the activation memory of one micro-batch (padded to max_length) per GPU, without
    and with activation checkpointing (:mod:`conan_core.model.activation_memory`)."""
    from conan_core.model.activation_memory import activation_plan
    from conan_core.model.sizes import format_bytes

    if not all(k in arch for k in ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers")):
        return ["activations: not estimated for this backbone (no Llama-style hidden/intermediate/head sizes)"]
    checkpointing = bool(cfg.model.get("gradient_checkpointing", False))
    every = int(cfg.model.get("checkpoint_every", 1) or 1)
    lines = [f"activations per micro-batch per GPU ({'fp32' if dtype == 'fp32' else 'bf16 autocast'}, padded to "
             f"max_length; LM head and loss not included; model.gradient_checkpointing: "
             f"{str(checkpointing).lower()}, checkpoint_every: {every}):"]
    for name in ("pretrain", "sft", "weak", "supervised"):
        stage = getattr(cfg, name)
        if not stage.enabled:
            continue
        rows = stage.batch_size
        if name == "weak":
            rows = 2 * stage.batch_size  # query + positive
        elif name == "supervised":
            rows = stage.batch_size * (2 + stage.num_negatives)  # query, positive, hard negatives
        soft = str((stage.mask or {}).get("type", "")) == "soft"
        plain = activation_plan(arch, rows, stage.max_length, dtype, dense_bias=soft)
        ckpt = activation_plan(arch, rows, stage.max_length, dtype, checkpointing=True, checkpoint_every=every,
                               dense_bias=soft)
        lines.append(f"  {name:<11} {rows:>4} x {stage.max_length:<5} tokens  {format_bytes(plain['peak']):>11}  "
                     f"checkpointed peak {format_bytes(ckpt['peak']):>11}")
    return lines
