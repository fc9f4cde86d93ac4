"""Collation: tokenised items (from :mod:`conan_core.data.tokenize`) into padded tensor batches.

Runs in the main process. Rows are right-padded; ``labels`` are -100 (:data:`IGNORE`) where no
token is predicted; embedding batches carry ``pool_mask`` (0 on padding and instruction tokens),
the text ids the losses mask duplicates with and the example ids the miner is asked about.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from conan_core.data.packing import IGNORE
from conan_core.data.tokenize import TokenCache

__all__ = ["IGNORE", "add_negatives", "collate_docs", "collate_pairs", "collate_sft", "collate_sts", "pad_id_of",
           "pad_rows", "sft_row"]


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, n_prefix: Sequence[int] | None = None) -> dict:
    """Right-padded ``{"input_ids", "attention_mask", "pool_mask"}`` LongTensors ``[B, L]``
    (``L`` = longest row; ``pool_mask`` = attention mask with the first ``n_prefix[b]`` tokens 0)."""
    length = max(1, max((len(r) for r in rows), default=1))
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), length), dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, :len(row)] = torch.as_tensor(list(row), dtype=torch.long)
        attn[b, :len(row)] = 1
    pool = attn.clone()
    for b, n in enumerate(n_prefix or ()):
        pool[b, :n] = 0
    return {"input_ids": ids, "attention_mask": attn, "pool_mask": pool}


def pad_id_of(tokenizer: Any) -> int:
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    return 0


def sft_row(prompt: Sequence[int], output: Sequence[int], bos: int, eos: int, max_length: int
            ) -> tuple[list[int], list[int]]:
    """``(ids, labels)`` of ``<s> prompt output </s>`` cut to ``max_length``.

    Labels are -100 on ``<s>`` and the prompt. When too long, the prompt keeps at most half of
    ``max_length`` (more if the output is short) and the output is cut at the end.
    """
    head = [bos, *prompt]
    tail = [*output, eos]
    if len(head) + len(tail) > max_length:
        keep = max(max_length - len(tail), min(len(head), max_length // 2))
        head, tail = head[:keep], tail[:max_length - keep]
    return head + tail, [IGNORE] * len(head) + list(tail)


def collate_sft(items: Sequence[dict], bos: int, eos: int, pad_id: int, max_length: int) -> dict:
    """``{"input_ids", "attention_mask", "labels"}`` [B, L] (labels -100 on prompt and padding)."""
    rows, labels = zip(*(sft_row(it["prompt"], it["output"], bos, eos, max_length) for it in items))
    batch = pad_rows(rows, pad_id)
    lab = torch.full_like(batch["input_ids"], IGNORE)
    for b, row in enumerate(labels):
        lab[b, :len(row)] = torch.as_tensor(row, dtype=torch.long)
    batch.pop("pool_mask")
    batch["labels"] = lab
    batch["keys"] = [tuple(it["key"]) for it in items]
    batch["tokens"] = int(batch["attention_mask"].sum())
    return batch


# ----------------------------------------------------------------------------- embeddings

def collate_pairs(items: Sequence[dict], pad_id: int) -> dict:
    """``{"query": {input_ids, attention_mask, pool_mask}, "positive": {...}, "query_ids",
    "positive_ids" LongTensor[B], "example_ids": list[str], "keys", "tokens", "task"}``."""
    query = pad_rows([it["query"] for it in items], pad_id, [it["query_prefix"] for it in items])
    positive = pad_rows([it["positive"] for it in items], pad_id)
    return {"query": query, "positive": positive,
            "query_ids": torch.tensor([it["query_id"] for it in items], dtype=torch.long),
            "positive_ids": torch.tensor([it["positive_id"] for it in items], dtype=torch.long),
            "example_ids": [it["example_id"] for it in items],
            "keys": [tuple(it["key"]) for it in items], "task": items[0].get("task", "default"),
            "tokens": int(query["attention_mask"].sum() + positive["attention_mask"].sum())}


def add_negatives(batch: dict, negatives: Sequence[Sequence[str]], tokenizer: Any, max_length: int,
                  pad_id: int, cache: TokenCache | None = None) -> dict:
    """Add ``"negative"`` (B·n rows, query-major) and ``"negative_ids"`` LongTensor[B, n] to ``batch``.
    ``cache`` (a :class:`~conan_core.data.tokenize.TokenCache` of the same tokenizer and
    ``max_length``) serves texts seen before; the batch is the same with or without it."""
    n = len(negatives[0]) if negatives else 0
    if any(len(row) != n for row in negatives):
        raise ValueError(f"every query needs the same number of negatives, got {[len(r) for r in negatives]}")
    flat = [t for row in negatives for t in row]
    ids, tids = (cache if cache is not None else TokenCache(tokenizer, max_length))(flat)
    batch["negative"] = pad_rows(ids, pad_id)
    batch["negative_ids"] = torch.tensor(tids, dtype=torch.long).view(len(negatives), n)
    batch["tokens"] = int(batch["tokens"]) + int(batch["negative"]["attention_mask"].sum())
    return batch


def collate_sts(items: Sequence[dict], pad_id: int) -> dict:
    """``{"s1": {...}, "s2": {...}, "scores": float32 [S], "keys"}``."""
    return {"s1": pad_rows([it["s1"] for it in items], pad_id), "s2": pad_rows([it["s2"] for it in items], pad_id),
            "scores": torch.tensor([it["score"] for it in items], dtype=torch.float32),
            "keys": [tuple(it["key"]) for it in items]}


# ----------------------------------------------------------------------------- unpacked LM rows

def collate_docs(items: Sequence[dict], pad_id: int, max_length: int) -> dict:
    """One document per row (``pretrain.packing: false``): ``<s> text </s>`` cut to ``max_length``,
    right-padded; labels -100 on padding; ``segment_ids`` 0 (one document per row)."""
    rows = [list(it["ids"])[:max_length] for it in items]
    batch = pad_rows(rows, pad_id)
    batch.pop("pool_mask")
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE)
    batch["segment_ids"] = torch.zeros_like(batch["input_ids"])
    batch["keys"] = [tuple(it["key"]) for it in items]
    batch["tokens"] = int(batch["attention_mask"].sum())
    return batch
