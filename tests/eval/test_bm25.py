"""BM25 reference: tokenisation of spaced and unspaced scripts, search, pair scores."""

from __future__ import annotations

import math

import numpy as np

from conan_core.eval.bm25 import BM25Index, bm25_tokenize


def test_tokenize_words_and_cjk():
    assert bm25_tokenize("Hello, World! hello") == ["hello", "world", "hello"]
    assert bm25_tokenize("東京都") == ["東", "京", "都", "東京", "京都"]
    assert bm25_tokenize("abc東京") == ["abc", "東", "京", "東京"]
    assert bm25_tokenize("") == [] and bm25_tokenize("!!") == []


def reference_bm25(corpus: list[str], query: str, k1=1.5, b=0.75) -> np.ndarray:
    """Lucene (>= 8) BM25 in float64: idf = ln(1 + (N - df + 0.5) / (df + 0.5)), term weight
    tf / (tf + k1 (1 - b + b |d| / avgdl)) (no (k1 + 1) factor: it does not change rankings)."""
    docs = [bm25_tokenize(t) for t in corpus]
    avg = sum(len(d) for d in docs) / len(docs)
    out = np.zeros(len(docs))
    for term in bm25_tokenize(query):  # a repeated query term counts each time (as in bm25s)
        df = sum(term in d for d in docs)
        if df == 0:
            continue
        idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
        for i, d in enumerate(docs):
            tf = d.count(term)
            out[i] += idf * tf / (tf + k1 * (1 - b + b * len(d) / avg))
    return out


CORPUS = ["the cat sat on the mat", "dogs bark at night", "a cat and a dog", "東京は日本の首都です", ""]


def test_scores_match_float64_reference():
    index = BM25Index(CORPUS)
    for query in ["cat", "cat dog night", "東京の首都", "unknown words only", "the the cat"]:
        np.testing.assert_allclose(index.scores(query), reference_bm25(CORPUS, query), rtol=1e-5, atol=1e-6)


def test_search_ranks_and_caps_k():
    index = BM25Index(CORPUS)
    scores, ids = index.search(["cat", "東京", "bark"], k=10)
    assert scores.shape == ids.shape == (3, len(CORPUS))  # k capped by the corpus size
    assert ids[1, 0] == 3 and ids[2, 0] == 1 and set(ids[0, :2]) == {0, 2}
    assert (np.diff(scores, axis=1) <= 1e-7).all()  # best first
    empty_scores, empty_ids = index.search([], k=3)
    assert empty_scores.shape == (0, 3) and empty_ids.dtype == np.int64


def test_score_pairs():
    index = BM25Index(CORPUS)
    pairs = index.score_pairs(["cat", "bark", "zzz"], [2, 1, 0])
    expected = [index.scores("cat")[2], index.scores("bark")[1], 0.0]
    np.testing.assert_allclose(pairs, expected, rtol=1e-6)
