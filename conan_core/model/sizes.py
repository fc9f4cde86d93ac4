"""Architecture presets, parameter counting and a per-GPU memory plan.

``ARCHITECTURES[name]`` holds :class:`~conan_core.model.ConanConfig` keyword arguments; the
``conan-1.4b`` entry reproduces RECIPE.md §1 (8 layers, hidden 3584, 32 q / 8 kv heads of 112,
FFN 8192, vocabulary 150,000, context 32,768). The paper counts 1503M parameters (token embedding
537.6M + 8 blocks ~962M, no LM head); :func:`parameter_breakdown` gives 1499.2M for these sizes
(the paper's figure is rounded or counts a few extra vectors; the test allows 1%).

Nothing here needs transformers or allocates memory: counts are closed-form, and
:func:`count_parameters` counts a real (or meta-device) model.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from conan_core.errors import ConanError

ARCHITECTURES: dict[str, dict[str, Any]] = {
    # runs a whole pipeline on a laptop CPU in minutes
    "tiny": {
        "vocab_size": 2000, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 172,
        "max_position_embeddings": 512, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
    },
    # the `small` preset's model (d=128, 4 layers; see the README on its cost)
    "small": {
        "vocab_size": 4000, "hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 32, "intermediate_size": 344,
        "max_position_embeddings": 512, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
    },
    # RECIPE.md §1; rope_theta and eps are not in the paper (Llama-family long-context values)
    "conan-1.4b": {
        "vocab_size": 150000, "hidden_size": 3584, "num_hidden_layers": 8, "num_attention_heads": 32,
        "num_key_value_heads": 8, "head_dim": 112, "intermediate_size": 8192,
        "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
    },
}

#: bytes per parameter (weights, gradients, optimizer states) of AdamW under each precision:
#: "fp32" = fp32 weights and grads, m and v in fp32 (also what bf16 *autocast* training stores);
#: "bf16" / "fp16" = half-precision weights and grads plus an fp32 master copy, m and v (12 bytes).
PRECISION_BYTES: dict[str, tuple[int, int, int]] = {
    "fp32": (4, 4, 8),
    "bf16": (2, 2, 12),
    "fp16": (2, 2, 12),
}


def resolve_architecture(arch: Any) -> dict[str, Any]:
    """An ``ARCHITECTURES`` name, a dict of ConanConfig fields, or a config object with
    ``to_dict()`` (``ConanConfig``) -> a dict of fields."""
    if isinstance(arch, str):
        if arch not in ARCHITECTURES:
            from conan_core.errors import close_matches

            near = close_matches(arch, ARCHITECTURES)
            raise ConanError(f"unknown architecture {arch!r}"
                             + (f"; did you mean {', '.join(map(repr, near))}?" if near else "")
                             + f"; known: {', '.join(sorted(ARCHITECTURES))}")
        return dict(ARCHITECTURES[arch])
    if hasattr(arch, "to_dict"):
        return arch.to_dict()
    return dict(arch)


def parameter_breakdown(arch: Any, vocab_size: int | None = None) -> dict[str, int]:
    """Closed-form parameter counts of a Conan decoder.

    Returns ints: ``embedding``, ``attention`` and ``mlp`` and ``norms`` (per block), ``block``,
    ``blocks`` (all layers), ``final_norm``, ``lm_head`` (0 when tied), ``total`` (no LM head, the
    paper's convention) and ``total_with_lm_head`` (what is trained and stored).
    """
    a = resolve_architecture(arch)
    vocab = int(vocab_size if vocab_size is not None else a["vocab_size"])
    hidden, heads = int(a["hidden_size"]), int(a["num_attention_heads"])
    kv_heads = int(a.get("num_key_value_heads") or heads)
    head_dim = int(a.get("head_dim") or hidden // heads)
    ffn, layers = int(a["intermediate_size"]), int(a["num_hidden_layers"])
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
    mlp = 3 * hidden * ffn
    norms = 2 * hidden
    block = attention + mlp + norms
    embedding = vocab * hidden
    lm_head = 0 if a.get("tie_word_embeddings", False) else vocab * hidden
    total = embedding + layers * block + hidden
    return {"embedding": embedding, "attention": attention, "mlp": mlp, "norms": norms, "block": block,
            "blocks": layers * block, "final_norm": hidden, "lm_head": lm_head, "total": total,
            "total_with_lm_head": total + lm_head}


def count_parameters(model: nn.Module, exclude_lm_head: bool = True) -> int:
    """Number of distinct parameters of ``model`` (works on the meta device).

    Tied weights count once. ``exclude_lm_head`` drops an untied output projection
    (``model.get_output_embeddings()``), as the paper's 1503M does.
    """
    seen: dict[int, int] = {}
    for param in model.parameters():
        seen[id(param)] = param.numel()
    if exclude_lm_head:
        head_fn = getattr(model, "get_output_embeddings", None)
        head = head_fn() if callable(head_fn) else None
        inputs_fn = getattr(model, "get_input_embeddings", None)
        inputs = inputs_fn() if callable(inputs_fn) else None
        if head is not None:
            tied = inputs is not None and head.weight is inputs.weight
            for param in head.parameters():
                if not (tied and param is head.weight):
                    seen.pop(id(param), None)
    return sum(seen.values())


def memory_plan(arch: Any, n_gpus: int, zero_stage: int = 1, dtype: str = "bf16",
                vocab_size: int | None = None) -> dict[str, Any]:
    """Per-GPU bytes for weights, gradients and AdamW states of a data-parallel run.

    ``zero_stage``: 0 = plain DDP (everything replicated), 1 = optimizer states sharded over
    ``n_gpus`` (the paper's ZeRO-1), 2 = gradients too, 3 = weights too (FSDP full shard).
    ``dtype``: a key of :data:`PRECISION_BYTES`. Activations are not included (they depend on
    batch, sequence length and checkpointing). Returns ``parameters`` (with LM head), the byte
    counts ``weights``, ``grads``, ``optimizer``, ``total`` and the inputs.
    """
    if dtype not in PRECISION_BYTES:
        raise ConanError(f"memory_plan: unknown dtype {dtype!r}; valid: {', '.join(PRECISION_BYTES)}")
    if zero_stage not in (0, 1, 2, 3):
        raise ConanError(f"memory_plan: zero_stage must be 0, 1, 2 or 3 (got {zero_stage})")
    if n_gpus < 1:
        raise ConanError(f"memory_plan: n_gpus must be >= 1 (got {n_gpus})")
    params = parameter_breakdown(arch, vocab_size)["total_with_lm_head"]
    w_bytes, g_bytes, o_bytes = PRECISION_BYTES[dtype]

    def share(nbytes: int, sharded: bool) -> int:
        return -(-nbytes // n_gpus) if sharded else nbytes  # ceil: shards are padded

    weights = share(params * w_bytes, zero_stage >= 3)
    grads = share(params * g_bytes, zero_stage >= 2)
    optimizer = share(params * o_bytes, zero_stage >= 1)
    return {"parameters": params, "weights": weights, "grads": grads, "optimizer": optimizer,
            "total": weights + grads + optimizer, "n_gpus": n_gpus, "zero_stage": zero_stage, "dtype": dtype}


def format_bytes(n: int) -> str:
    """``1536 -> '1.50 KiB'`` (binary units)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{value:.2f} TiB"
