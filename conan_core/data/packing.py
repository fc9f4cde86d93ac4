"""Packing for pretraining: tokenised documents concatenated and cut into full rows, resumably.

This is the packer training uses (``pretrain.packing: true``, the default); its throughput is
benchmarked in ``benchmarks/test_data_throughput.py``.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import torch

from conan_core.data.resumable import Resumable, inner_state, load_inner_state

#: label of a position that is not predicted
IGNORE = -100


class PackedLMBatches(Resumable):
    """Packs tokenised documents (``{"ids", "key"}`` items of ``inner``) into batches of
    ``batch_size`` rows of ``seq_len`` tokens, resumably.

    Yields ``{"input_ids", "segment_ids", "labels", "attention_mask"}`` (LongTensor [B, L]),
    ``"keys"`` (the ``(url, key)`` of every document that *starts* in the batch, so each document
    is counted exactly once) and ``"tokens"`` (B·L). Rows are the concatenation of the documents, a
    document longer than what is left of a row continuing in the next row (documents end with
    ``</s>``, so no separator is added).
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
                "inner": inner_state(self.inner, "PackedLMBatches")}

    def load_state_dict(self, state: dict) -> None:
        load_inner_state(self.inner, state["inner"], "PackedLMBatches")
        self._tokens = list(state["tokens"])
        self._segments = list(state["segments"])
        self._starts = [(int(o), str(u), str(k)) for o, u, k in state["starts"]]
        self._doc = int(state["doc"])
        self._counts = dict(state["counts"])

    def counters(self) -> dict[str, int]:
        inner = self.inner.counters() if hasattr(self.inner, "counters") else {}
        return {**inner, **self._counts}
