"""Helpers of the backbone and export tests (``from tests.backbones.harness import ...``)."""

from __future__ import annotations

from pathlib import Path

#: a small randomly initialised transformers decoder (sizes of the tiny test runs)
TINY_HF = {"type": "hf", "model_type": "qwen2", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "head_dim": 8, "intermediate_size": 64, "max_position_embeddings": 128,
           "initializer_range": 0.2}


def build_tiny_hf_run(root: str | Path, *, spec: dict | None = None, pooler: dict | None = None,
                      query_instruction: str = "Find passages that answer the question") -> Path:
    """:func:`tests.utils.build_tiny_run` whose ``supervised/final`` holds a randomly initialised
    transformers decoder (default: :data:`TINY_HF`, a Qwen2) saved as the ``hf`` backbone saves it,
    with the run's embedder.json (mean pooling unless ``pooler``). Returns ``root``."""
    import torch

    from conan_core.registries import REGISTRIES
    from conan_core.tokenizer import load_tokenizer
    from tests import utils

    root = utils.build_tiny_run(root, pooler=pooler, query_instruction=query_instruction)
    final = root / "supervised" / "final"
    tokenizer = load_tokenizer(final)
    torch.manual_seed(0)
    decoder = REGISTRIES["backbones"].build(spec or TINY_HF).build(len(tokenizer))
    for name in ("model.safetensors", "config.json"):
        (final / name).unlink()
    decoder.save_pretrained(str(final))
    return root
