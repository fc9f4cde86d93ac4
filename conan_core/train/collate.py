"""Tokenising collators and resumable batch stages of the four training stages.

Formats (the embedding ones are exactly what :class:`conan_core.Embedder` feeds the model, so a
trained model is evaluated on the inputs it was trained on):

* **pretraining**: each document is ``<s> text </s>``; documents are concatenated and cut into
  rows of ``seq_len`` tokens (:class:`PackedLMBatches`), with ``segment_ids`` numbering the
  documents of a row for the ``document`` mask;
* **SFT**: ``<s> prompt output </s>`` with labels -100 on ``<s>`` and the prompt (loss only on the
  output and its ``</s>``);
* **embeddings**: a query is ``<s><instruct>{instruction}<query>{text}</s>`` (no markers without
  an instruction; :func:`conan_core.embedder.format_query`), a document ``<s>{text}</s>``; the
  instruction tokens (``<s>`` through ``<query>``) are 0 in ``pool_mask`` so poolers that exclude
  instructions skip them. Text ids (:func:`text_id`) are 63-bit hashes of the normalised text
  (:func:`conan_core.miners.pool.normalize_text`), so the losses mask duplicates and
  case/whitespace variants of a positive.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable, Iterator, Sequence

import torch

from conan_core.sources.base import Stage
from conan_core.sources.reader import load_stage_state, stage_state

IGNORE = -100


# ----------------------------------------------------------------------------- text ids

def text_id(text: str) -> int:
    """Stable int64 id (>= 0) of ``text`` after normalisation (NFKC, case-fold, whitespace)."""
    from conan_core.miners.pool import normalize_text

    digest = hashlib.blake2b(normalize_text(text).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF_FFFF_FFFF


# ----------------------------------------------------------------------------- tokenising

def tokenize_texts(tokenizer: Any, texts: Sequence[str], max_length: int,
                   instruction: str | None = None) -> tuple[list[list[int]], list[int]]:
    """Token ids of ``texts`` in the embedder's format and, per text, the number of leading
    instruction tokens (``<s>``, ``<instruct>``, instruction, ``<query>``; 0 without instruction).

    Same contract as :meth:`conan_core.Embedder.tokenize`: ``<s> ... </s>`` from the tokenizer,
    truncated to ``max_length`` keeping the start.
    """
    from conan_core.embedder import QUERY, format_query
    from conan_core.tokenizer import clean_text

    inputs = [format_query(clean_text(t), instruction) for t in texts]
    enc = tokenizer(inputs, add_special_tokens=True, truncation=True, max_length=max_length,
                    padding=False, return_attention_mask=False)["input_ids"]
    ids = [list(x) for x in enc]
    n_prefix = [0] * len(ids)
    if instruction:
        query_id = tokenizer.convert_tokens_to_ids(QUERY)
        n_prefix = [row.index(query_id) + 1 if query_id in row else len(row) for row in ids]
    return ids, n_prefix


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


class DocTokenizer:
    """``sample -> {"ids": [<s> text </s>], "key": (url, key)}`` (picklable: runs in loader workers)."""

    def __init__(self, tokenizer: Any, field: str = "text"):
        self.tokenizer = tokenizer
        self.field = field

    def __call__(self, sample: dict) -> dict:
        from conan_core.tokenizer import clean_text

        ids = self.tokenizer(clean_text(sample[self.field]), add_special_tokens=True,
                             return_attention_mask=False)["input_ids"]
        return {"ids": list(ids), "key": (sample.get("__url__", ""), sample.get("__key__", ""))}


# ----------------------------------------------------------------------------- pretraining

class PackedLMBatches(Stage):
    """Packs tokenised documents (``{"ids", "key"}`` items of ``inner``) into batches of
    ``batch_size`` rows of ``seq_len`` tokens, resumably.

    Yields ``{"input_ids", "segment_ids", "labels", "attention_mask"}`` (LongTensor [B, L]),
    ``"keys"`` (the ``(url, key)`` of every document that *starts* in the batch, so each document
    is counted exactly once) and ``"tokens"`` (B·L). Rows are the concatenation of the documents, a
    document longer than what is left of a row continuing in the next row (same cut as
    :func:`conan_core.data.packing.pack`, with no extra EOS since documents end with ``</s>``).
    ``segment_ids`` number the documents of a row from 0. ``labels`` equal ``input_ids`` except -100
    at the first token of every document but the row's first: with the document mask the previous
    document's last token cannot see the next one, so predicting it would only add noise.
    State: the pending tokens, segments and keys, plus the inner stage's state.
    """

    def __init__(self, inner: Iterable[dict], batch_size: int, seq_len: int):
        self.inner = inner
        self.batch_size = int(batch_size)
        self.seq_len = int(seq_len)
        self._tokens: list[int] = []
        self._segments: list[int] = []
        self._starts: list[tuple[int, str, str]] = []  # (token offset, url, key) of pending documents
        self._doc = 0
        self._counts = {"documents": 0, "empty_docs": 0, "rows": 0}

    def __iter__(self) -> Iterator[dict]:
        need = self.batch_size * self.seq_len
        for item in self.inner:
            ids = item["ids"]
            if not ids:
                self._counts["empty_docs"] += 1
                continue
            url, key = item["key"]
            self._starts.append((len(self._tokens), str(url), str(key)))
            self._tokens.extend(ids)
            self._segments.extend([self._doc] * len(ids))
            self._doc += 1
            self._counts["documents"] += 1
            while len(self._tokens) >= need:
                yield self._emit(need)

    def _emit(self, need: int) -> dict:
        tokens, segments = self._tokens[:need], self._segments[:need]
        keys = [(u, k) for off, u, k in self._starts if off < need]
        doc_starts = {off for off, _, _ in self._starts if off < need}
        self._tokens, self._segments = self._tokens[need:], self._segments[need:]
        self._starts = [(off - need, u, k) for off, u, k in self._starts if off >= need]
        B, L = self.batch_size, self.seq_len
        ids = torch.tensor(tokens, dtype=torch.long).view(B, L)
        seg = torch.tensor(segments, dtype=torch.long).view(B, L)
        seg = seg - seg[:, :1]  # documents numbered from 0 inside each row
        labels = ids.clone()
        flat = labels.view(-1)
        for off in doc_starts:
            if off % L:  # a document start inside a row (not the row's first token)
                flat[off] = IGNORE
        self._counts["rows"] += B
        return {"input_ids": ids, "segment_ids": seg, "labels": labels,
                "attention_mask": torch.ones_like(ids), "keys": keys, "tokens": B * L}

    def state_dict(self) -> dict:
        return {"tokens": list(self._tokens), "segments": list(self._segments),
                "starts": [list(s) for s in self._starts], "doc": self._doc, "counts": dict(self._counts),
                "inner": stage_state(self.inner, "PackedLMBatches")}

    def load_state_dict(self, state: dict) -> None:
        load_stage_state(self.inner, state["inner"], "PackedLMBatches")
        self._tokens = list(state["tokens"])
        self._segments = list(state["segments"])
        self._starts = [(int(o), str(u), str(k)) for o, u, k in state["starts"]]
        self._doc = int(state["doc"])
        self._counts = dict(state["counts"])

    def counters(self) -> dict[str, int]:
        inner = self.inner.counters() if hasattr(self.inner, "counters") else {}
        return {**inner, **self._counts}


# ----------------------------------------------------------------------------- SFT

class SFTTokenizer:
    """``pairs sample -> {"prompt": ids, "output": ids, "key"}`` (prompt = query, output = pos)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def __call__(self, sample: dict) -> dict:
        from conan_core.tokenizer import clean_text

        tok = self.tokenizer
        prompt = tok(clean_text(sample["query"]), add_special_tokens=False, return_attention_mask=False)["input_ids"]
        output = tok(clean_text(sample["pos"]), add_special_tokens=False, return_attention_mask=False)["input_ids"]
        return {"prompt": list(prompt), "output": list(output),
                "key": (sample.get("__url__", ""), sample.get("__key__", ""))}


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

class PairTokenizer:
    """``pairs sample -> tokenised query / positive (+ ids)`` in the embedder's format.

    The query instruction is the sample's ``instruction`` when present and non-empty, else
    ``default_instruction``. Negatives stay texts (the miner picks them later, in the main process).
    """

    def __init__(self, tokenizer: Any, max_length: int, default_instruction: str = ""):
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.default_instruction = default_instruction

    def __call__(self, sample: dict) -> dict:
        from conan_core.miners.pool import example_id_of

        instruction = sample.get("instruction") or self.default_instruction
        (q,), (nq,) = tokenize_texts(self.tokenizer, [sample["query"]], self.max_length, instruction)
        (p,), _ = tokenize_texts(self.tokenizer, [sample["pos"]], self.max_length, None)
        return {"query": q, "query_prefix": nq, "positive": p, "query_id": text_id(sample["query"]),
                "positive_id": text_id(sample["pos"]), "example_id": example_id_of(sample, -1),
                "neg": list(sample.get("neg", [])), "task": sample.get("task", "default"),
                "key": (sample.get("__url__", ""), sample.get("__key__", ""))}


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
                  pad_id: int) -> dict:
    """Add ``"negative"`` (B·n rows, query-major) and ``"negative_ids"`` LongTensor[B, n] to ``batch``."""
    n = len(negatives[0]) if negatives else 0
    if any(len(row) != n for row in negatives):
        raise ValueError(f"every query needs the same number of negatives, got {[len(r) for r in negatives]}")
    flat = [t for row in negatives for t in row]
    ids, _ = tokenize_texts(tokenizer, flat, max_length, None)
    batch["negative"] = pad_rows(ids, pad_id)
    batch["negative_ids"] = torch.tensor([text_id(t) for t in flat], dtype=torch.long).view(len(negatives), n)
    batch["tokens"] = int(batch["tokens"]) + int(batch["negative"]["attention_mask"].sum())
    return batch


class STSTokenizer:
    """``sts sample -> {"s1", "s2" ids, "score", "key"}`` (documents' format, no instruction)."""

    def __init__(self, tokenizer: Any, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = int(max_length)

    def __call__(self, sample: dict) -> dict:
        (a, b), _ = tokenize_texts(self.tokenizer, [sample["s1"], sample["s2"]], self.max_length, None)
        return {"s1": a, "s2": b, "score": float(sample["score"]),
                "key": (sample.get("__url__", ""), sample.get("__key__", ""))}


def collate_sts(items: Sequence[dict], pad_id: int) -> dict:
    """``{"s1": {...}, "s2": {...}, "scores": float32 [S], "keys"}``."""
    return {"s1": pad_rows([it["s1"] for it in items], pad_id), "s2": pad_rows([it["s2"] for it in items], pad_id),
            "scores": torch.tensor([it["score"] for it in items], dtype=torch.float32),
            "keys": [tuple(it["key"]) for it in items]}


# ----------------------------------------------------------------------------- filtering

class DropIds(Stage):
    """Passes the items of ``inner`` whose ``example_id`` is not in ``drop``; counts
    the others as ``teacher_dropped`` (the weak stage's teacher filter). Picklable, resumable."""

    def __init__(self, inner: Iterable[dict], drop: Iterable[str]):
        self.inner = inner
        self.drop = frozenset(drop)
        self._dropped = 0

    def __iter__(self) -> Iterator[dict]:
        for item in self.inner:
            if item["example_id"] in self.drop:
                self._dropped += 1
                continue
            yield item

    def state_dict(self) -> dict:
        return {"dropped": self._dropped, "inner": stage_state(self.inner, "DropIds")}

    def load_state_dict(self, state: dict) -> None:
        load_stage_state(self.inner, state["inner"], "DropIds")
        self._dropped = int(state["dropped"])

    def counters(self) -> dict[str, int]:
        inner = self.inner.counters() if hasattr(self.inner, "counters") else {}
        return {**inner, "teacher_dropped": self._dropped}


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
