"""Helpers shared by the tests and the benchmarks (``from tests.utils import ...``; the repository
root is on ``sys.path`` under ``python -m pytest``).

``build_tiny_run(root)`` writes ``root/config.yaml``, ``root/tokenizer/`` (a 400-token BPE trained
on standard-library docstrings in about a second) and ``root/supervised/{final/, DONE}`` holding a
randomly initialised 2-layer Conan model with ``embedder.json``: a run directory for embedder,
export and evaluation tests that needs no training.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

SENTENCES = [
    "The soft mask opens the causal attention step by step.",
    "Hard negatives are replaced when they stop being hard.",
    "",
    "short",
    "A much longer sentence about training text embedders from scratch with a decoder-only "
    "language model, four stages, and Matryoshka representation learning at several dimensions.",
    "Bonjour le monde, ceci est une phrase en français.",
    "東京は日本の首都です。",
    "x " * 80,
]


def docstring_corpus(limit: int = 2000) -> list[str]:
    """Non-empty docstring lines of a few standard-library modules (deterministic)."""
    import collections
    import json as json_mod
    import os
    import pathlib
    import random

    lines: list[str] = []
    for module in (json_mod, collections, pathlib, random, inspect, os):
        for _, obj in sorted(vars(module).items()):
            doc = getattr(obj, "__doc__", None)
            if isinstance(doc, str):
                lines.extend(line.strip() for line in doc.splitlines() if line.strip())
    return list(dict.fromkeys(lines))[:limit]


def build_tiny_run(root: str | Path, *, pooler: dict | None = None, hidden_size: int = 32,
                   query_instruction: str = "Find passages that answer the question",
                   mrl_dims: tuple[int, ...] = (8, 16, 32), max_length: int = 64,
                   backbone: dict | None = None) -> Path:
    """Write the tiny run under ``root`` (see the module docstring); returns ``root``.

    ``backbone`` overrides fields of the ``conan`` backbone spec (its ``hidden_size`` wins over the
    ``hidden_size`` argument)."""
    import torch

    from conan_core.registries import REGISTRIES
    from conan_core.tokenizer import load_tokenizer, train_tokenizer

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    corpus = root / "tokenizer_corpus.txt"
    corpus.write_text("\n".join(docstring_corpus()), encoding="utf-8")
    train_tokenizer([corpus], 400, root / "tokenizer", progress=False)
    tokenizer = load_tokenizer(root / "tokenizer")

    torch.manual_seed(0)
    spec = {"type": "conan", "hidden_size": hidden_size, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 8, "intermediate_size": 2 * hidden_size,
            "max_position_embeddings": 128, "initializer_range": 0.2, **(backbone or {})}
    hidden_size = spec["hidden_size"]
    model = REGISTRIES["backbones"].build(spec).build(len(tokenizer))
    final = root / "supervised" / "final"
    model.save_pretrained(str(final))
    tokenizer.save_pretrained(str(final))
    pooler_spec = REGISTRIES["poolers"].resolve(pooler or {"type": "mean"})
    settings = {"pooler": pooler_spec, "mask": {"type": "bidirectional"}, "max_length": max_length,
                "query_instruction": query_instruction, "normalize": True, "mrl_dims": list(mrl_dims),
                "stage": "supervised"}
    (final / "embedder.json").write_text(json.dumps(settings, indent=2), encoding="utf-8")
    built = REGISTRIES["poolers"].build(pooler_spec, hidden_size=hidden_size)
    state = built.state_dict()
    if state:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(final / "pooler.safetensors"))
    (root / "supervised" / "DONE").write_text(json.dumps({"steps": 0, "final_loss": None, "seconds": 0.0}))
    (root / "config.yaml").write_text(
        "name: tiny-test\nsupervised:\n  max_length: %d\n  query_instruction: %s\n"
        % (max_length, json.dumps(query_instruction)), encoding="utf-8")
    return root


def assert_plain_loads_match(export_dir, source, sentences, atol: float = 1e-5) -> None:
    """An export loaded with plain transformers (mean pooling by hand) and with
    sentence-transformers (queries and documents) gives ``source``'s (an Embedder) vectors."""
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(str(export_dir)).eval()
    tok = AutoTokenizer.from_pretrained(str(export_dir))
    batch = tok(sentences, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    np.testing.assert_allclose(pooled, source.encode(sentences), atol=atol)
    st = SentenceTransformer(str(export_dir), device="cpu")
    np.testing.assert_allclose(st.encode_query(sentences), source.encode_queries(sentences), atol=atol)
    np.testing.assert_allclose(st.encode_document(sentences), source.encode_corpus(sentences), atol=atol)
