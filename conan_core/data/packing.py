"""Packing tokenised documents into fixed-length rows for causal-LM pretraining, resumable."""

from __future__ import annotations

from array import array
from typing import Any, Iterable, Iterator

import torch

from conan_core.data.samples import DataError
from conan_core.sources.base import Stage
from conan_core.sources.reader import load_stage_state, stage_state


def _as_ids(doc: Any) -> array:
    """One document as an int64 array (C-speed type check: floats, strings ... raise)."""
    if isinstance(doc, torch.Tensor):
        if doc.dim() != 1 or doc.is_floating_point() or doc.is_complex():
            raise DataError(f"pack: a document must be a 1-D integer tensor, got shape {list(doc.shape)} "
                            f"dtype {doc.dtype}", reason="bad_tokens")
        return array("q", doc.detach().to("cpu", torch.int64).numpy().tobytes())
    if isinstance(doc, dict) and "input_ids" in doc:
        doc = doc["input_ids"]
    if isinstance(doc, (str, bytes, bytearray)):  # array() would read bytes as raw int64 words
        raise DataError(f"pack: a document must be a list of ints, got {type(doc).__name__}",
                        reason="bad_tokens")
    try:
        return array("q", doc)
    except (TypeError, OverflowError):
        raise DataError(f"pack: a document must be a list of ints (or a dict with 'input_ids'), got "
                        f"{type(doc).__name__}", reason="bad_tokens") from None


class Packer(Stage):
    """Concatenates documents, each followed by ``eos_id``, and cuts the stream into rows.

    Yields ``(input_ids, segment_ids)``, both LongTensor ``[seq_len]``. ``segment_ids`` numbers the
    documents inside each row from 0 (the document a row starts in, possibly continued from the
    previous row, is 0); a document's EOS carries its segment id, so the ``document`` mask keeps
    documents apart. Token ids must be >= 0. A document longer than a row continues in the next
    row(s). Empty documents are skipped (``empty_docs`` counter). At the end of a finite input the
    last partial row is dropped (``drop_last=True``) or padded with ``pad_id`` (default
    ``eos_id``) and segment id ``-1``.

    The state holds the tokens not yet emitted and the input's state (the input must be a stage,
    e.g. ``Map(TextShards, tokenize)``, for ``state_dict()``).
    """

    def __init__(self, token_id_lists: Iterable[Any], seq_len: int, eos_id: int, *, drop_last: bool = True,
                 pad_id: int | None = None):
        if not isinstance(seq_len, int) or seq_len < 1:
            raise DataError(f"pack: seq_len must be a positive integer, got {seq_len!r}", reason="bad_arg")
        if not isinstance(eos_id, int) or eos_id < 0:
            raise DataError(f"pack: eos_id must be an integer >= 0, got {eos_id!r}", reason="bad_arg")
        self.inner = token_id_lists
        self.seq_len = seq_len
        self.eos_id = eos_id
        self.drop_last = drop_last
        self.pad_id = eos_id if pad_id is None else int(pad_id)
        self._tokens = array("q")
        self._segments = array("q")  # running document number of each pending token
        self._start = 0  # tokens before this index are already emitted
        self._doc = 0
        self._flushing = False
        self._counts = {"documents": 0, "empty_docs": 0, "rows": 0, "dropped_tokens": 0}

    def _row(self, tokens: array, segments: array) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.frombuffer(bytearray(tokens), dtype=torch.long)
        seg = torch.frombuffer(bytearray(segments), dtype=torch.long)
        seg -= segments[0]
        self._counts["rows"] += 1
        return ids, seg

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        L = self.seq_len
        if not self._flushing:
            for doc in self.inner:
                ids = _as_ids(doc)
                if not ids:
                    self._counts["empty_docs"] += 1
                    continue
                if min(ids) < 0:
                    raise DataError(f"pack: negative token id {min(ids)} in document "
                                    f"{self._counts['documents']}", reason="bad_tokens")
                # drop what earlier rows used (less than one row is left), then append the document
                del self._tokens[:self._start], self._segments[:self._start]
                self._start = 0
                self._tokens.extend(ids)
                self._tokens.append(self.eos_id)
                self._segments.extend(array("q", [self._doc]) * (len(ids) + 1))
                self._doc += 1
                self._counts["documents"] += 1
                while len(self._tokens) - self._start >= L:
                    a = self._start
                    self._start = a + L
                    yield self._row(self._tokens[a:a + L], self._segments[a:a + L])
            self._flushing = True
        tokens, segments = self._tokens[self._start:], self._segments[self._start:]
        self._tokens, self._segments, self._start = array("q"), array("q"), 0
        if tokens:
            if self.drop_last:
                self._counts["dropped_tokens"] += len(tokens)
            else:
                pad = L - len(tokens)
                ids, seg = self._row(tokens + array("q", [self.pad_id]) * pad, segments + array("q", [0]) * pad)
                seg[L - pad:] = -1
                yield ids, seg
        self._flushing = False

    def state_dict(self) -> dict:
        return {"tokens": self._tokens[self._start:].tolist(), "segments": self._segments[self._start:].tolist(),
                "doc": self._doc, "flushing": self._flushing, "counts": dict(self._counts),
                "inner": stage_state(self.inner, "Packer")}

    def load_state_dict(self, state: dict) -> None:
        load_stage_state(self.inner, state["inner"], "Packer")
        self._tokens = array("q", state["tokens"])
        self._segments = array("q", state["segments"])
        self._start = 0
        self._doc = int(state["doc"])
        self._flushing = bool(state["flushing"])
        self._counts = dict(state["counts"])

    def counters(self) -> dict[str, int]:
        inner = self.inner.counters() if hasattr(self.inner, "counters") else {}
        return {**inner, **self._counts}


def pack(token_id_lists: Iterable[Any], seq_len: int, eos_id: int, *, drop_last: bool = True,
         pad_id: int | None = None) -> Packer:
    """Packed ``(input_ids, segment_ids)`` rows of ``seq_len`` tokens (see :class:`Packer`)."""
    return Packer(token_id_lists, seq_len, eos_id, drop_last=drop_last, pad_id=pad_id)

