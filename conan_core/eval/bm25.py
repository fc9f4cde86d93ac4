"""BM25 reference scores (a thin wrapper around ``bm25s``).

Every evaluator reports BM25 next to the model on the same data, as the papers do (RECIPE §7:
MKQA BM25 28.1 / 39.9 / 25.4). Tokenisation is language-agnostic so that the multilingual eval sets
get a fair baseline: lower-cased ``\\w+`` words, and for scripts written without spaces (Han, kana,
Thai, Lao, Khmer, Myanmar) character unigrams plus bigrams, since whole runs of such characters
would otherwise be single "words" that never match. No stemming and no stopword list (both are
language-specific).

``bm25s`` is imported inside the class, so importing this module stays cheap.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)
# scripts written without spaces between words
_NO_SPACE = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")


def bm25_tokenize(text: str) -> list[str]:
    """Lower-cased word tokens; unspaced-script runs become character unigrams and bigrams."""
    tokens: list[str] = []
    for word in _WORD.findall(text.lower()):
        pos = 0
        for run in _NO_SPACE.finditer(word):
            if run.start() > pos:
                tokens.append(word[pos:run.start()])
            chars = run.group()
            tokens.extend(chars)
            tokens.extend(chars[i:i + 2] for i in range(len(chars) - 1))
            pos = run.end()
        if pos < len(word):
            tokens.append(word[pos:])
    return tokens


class BM25Index:
    """A BM25 index over ``corpus`` texts (Lucene variant, k1=1.5, b=0.75 by default).

    ``search(queries, k) -> (scores float32 [Q, k'], ids int64 [Q, k'])`` with ``k' = min(k, N)``,
    best first; ``scores(query) -> float32 [N]`` all document scores of one query.
    """

    def __init__(self, corpus: Sequence[str], *, k1: float = 1.5, b: float = 0.75, method: str = "lucene"):
        import bm25s

        if len(corpus) == 0:
            raise ValueError("BM25Index needs at least one document")
        self.size = len(corpus)
        self._bm25 = bm25s.BM25(k1=k1, b=b, method=method)
        self._bm25.index([bm25_tokenize(t) for t in corpus], show_progress=False)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of ``query`` against every document; float32 [N], >= 0."""
        return np.asarray(self._bm25.get_scores(bm25_tokenize(query)), dtype=np.float32)

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``min(k, N)`` documents per query by BM25 score, best first (bm25s's own top-k)."""
        k = max(1, min(int(k), self.size))
        n = len(queries)
        if n == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        ids, scores = self._bm25.retrieve([bm25_tokenize(q) for q in queries], k=k, show_progress=False)
        return np.asarray(scores, dtype=np.float32), np.asarray(ids, dtype=np.int64)

    def score_pairs(self, queries: Sequence[str], doc_index: Sequence[int]) -> np.ndarray:
        """Score of query i against document ``doc_index[i]``; float32 [Q]."""
        if len(queries) != len(doc_index):
            raise ValueError(f"score_pairs: {len(queries)} queries but {len(doc_index)} document indices")
        return np.array([self.scores(q)[int(d)] for q, d in zip(queries, doc_index)], dtype=np.float32)
