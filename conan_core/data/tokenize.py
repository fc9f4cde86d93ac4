"""Tokenising steps of the training streams (they run in DataLoader workers, so each is a
picklable callable) and the text formats they produce.

Formats (the embedding ones are exactly what :class:`conan_core.Embedder` feeds the model, so a
trained model is evaluated on the inputs it was trained on):

* **pretraining**: each document is ``<s> text </s>`` (:class:`DocTokenizer`);
* **SFT**: ``prompt`` and ``output`` ids without specials (:class:`SFTTokenizer`); the collator
  adds ``<s>``/``</s>`` and masks the prompt;
* **embeddings**: a query is ``<s><instruct>{instruction}<query>{text}</s>`` (no markers without
  an instruction; :func:`conan_core.tokenizer.format_query`), a document ``<s>{text}</s>``; the
  number of instruction tokens (``<s>`` through ``<query>``) travels with each query so poolers
  that exclude instructions skip them. Text ids (:func:`text_id`) are 63-bit hashes of the
  normalised text (:func:`conan_core.data.samples.normalize_text`), so the losses mask duplicates
  and case/whitespace variants of a positive.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable, Iterator, Sequence

from conan_core.data.resumable import Resumable, inner_state, load_inner_state
from conan_core.data.samples import example_id_of, normalize_text

# ----------------------------------------------------------------------------- text ids

def text_id(text: str) -> int:
    """Stable int64 id (>= 0) of ``text`` after normalisation (NFKC, case-fold, whitespace)."""
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
    from conan_core.data.text import QUERY, clean_text, format_query

    inputs = [format_query(clean_text(t), instruction) for t in texts]
    enc = tokenizer(inputs, add_special_tokens=True, truncation=True, max_length=max_length,
                    padding=False, return_attention_mask=False)["input_ids"]
    ids = [list(x) for x in enc]
    n_prefix = [0] * len(ids)
    if instruction:
        query_id = tokenizer.convert_tokens_to_ids(QUERY)
        n_prefix = [row.index(query_id) + 1 if query_id in row else len(row) for row in ids]
    return ids, n_prefix


class TokenCache:
    """Memoised document ids: ``cache(texts) -> (ids, text_ids)`` equals
    ``(tokenize_texts(tokenizer, texts, max_length)[0], [text_id(t) for t in texts])``.

    The supervised stream tokenises every step's hard negatives, and they are drawn again and again
    from the same candidate pools, so after the first pass over the data most are lookups (on the
    tiny demo, tokenising and hashing the negatives was about a tenth of a supervised step). The
    texts missing from the cache are tokenised in one call. Each entry keeps the ids as an int32
    ``array`` and the 63-bit text id; at most ``capacity`` texts are kept (least recently used
    dropped first; about 0.5 KB each at 96 tokens). ``hits`` / ``misses`` count lookups."""

    def __init__(self, tokenizer: Any, max_length: int, capacity: int = 50_000):
        from collections import OrderedDict

        if capacity < 1:
            raise ValueError(f"TokenCache capacity must be >= 1, got {capacity}")
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.capacity = int(capacity)
        self._store: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def __call__(self, texts: Sequence[str]) -> tuple[list[Any], list[int]]:
        from array import array

        store = self._store
        missing = list(dict.fromkeys(t for t in texts if t not in store))
        if missing:
            rows, _ = tokenize_texts(self.tokenizer, missing, self.max_length, None)
            for text, row in zip(missing, rows):
                store[text] = (array("i", row), text_id(text))
        self.misses += len(missing)
        self.hits += len(texts) - len(missing)
        ids, tids = [], []
        for text in texts:
            row, tid = store[text]
            store.move_to_end(text)
            ids.append(row)
            tids.append(tid)
        while len(store) > self.capacity:  # after the lookups: this call's texts are all served
            store.popitem(last=False)
        return ids, tids


class DocTokenizer:
    """``sample -> {"ids": [<s> text </s>], "key": (url, key)}`` (picklable: runs in loader workers)."""

    def __init__(self, tokenizer: Any, field: str = "text"):
        self.tokenizer = tokenizer
        self.field = field

    def __call__(self, sample: dict) -> dict:
        from conan_core.data.text import clean_text

        ids = self.tokenizer(clean_text(sample[self.field]), add_special_tokens=True,
                             return_attention_mask=False)["input_ids"]
        return {"ids": list(ids), "key": (sample.get("__url__", ""), sample.get("__key__", ""))}


class SFTTokenizer:
    """``pairs sample -> {"prompt": ids, "output": ids, "key"}`` (prompt = query, output = pos)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def __call__(self, sample: dict) -> dict:
        from conan_core.data.text import clean_text

        tok = self.tokenizer
        prompt = tok(clean_text(sample["query"]), add_special_tokens=False, return_attention_mask=False)["input_ids"]
        output = tok(clean_text(sample["pos"]), add_special_tokens=False, return_attention_mask=False)["input_ids"]
        return {"prompt": list(prompt), "output": list(output),
                "key": (sample.get("__url__", ""), sample.get("__key__", ""))}


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
        instruction = sample.get("instruction") or self.default_instruction
        (q,), (nq,) = tokenize_texts(self.tokenizer, [sample["query"]], self.max_length, instruction)
        (p,), _ = tokenize_texts(self.tokenizer, [sample["pos"]], self.max_length, None)
        return {"query": q, "query_prefix": nq, "positive": p, "query_id": text_id(sample["query"]),
                "positive_id": text_id(sample["pos"]), "example_id": example_id_of(sample, -1),
                "neg": list(sample.get("neg", [])), "task": sample.get("task", "default"),
                "key": (sample.get("__url__", ""), sample.get("__key__", ""))}


class STSTokenizer:
    """``sts sample -> {"s1", "s2" ids, "score", "key"}`` (documents' format, no instruction)."""

    def __init__(self, tokenizer: Any, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = int(max_length)

    def __call__(self, sample: dict) -> dict:
        (a, b), _ = tokenize_texts(self.tokenizer, [sample["s1"], sample["s2"]], self.max_length, None)
        return {"s1": a, "s2": b, "score": float(sample["score"]),
                "key": (sample.get("__url__", ""), sample.get("__key__", ""))}


# ----------------------------------------------------------------------------- filtering

class DropIds(Resumable):
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
        return {"dropped": self._dropped, "inner": inner_state(self.inner, "DropIds")}

    def load_state_dict(self, state: dict) -> None:
        load_inner_state(self.inner, state["inner"], "DropIds")
        self._dropped = int(state["dropped"])

    def counters(self) -> dict[str, int]:
        inner = self.inner.counters() if hasattr(self.inner, "counters") else {}
        return {**inner, "teacher_dropped": self._dropped}
