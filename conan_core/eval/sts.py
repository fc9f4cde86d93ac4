"""``sts``: Spearman correlation of cosine similarity with the gold scores, next to BM25.

Both sentences are encoded the same way (no query instruction unless ``instruction`` is set),
as STS is symmetric. The BM25 reference indexes every sentence of the set (so IDF comes from the
data itself) and scores a pair by the mean of BM25(s1 -> s2) and BM25(s2 -> s1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from conan_core.eval.base import Evaluator, as_encoders, l2_normalize
from conan_core.eval.data import STSData, load_sts
from conan_core.eval.metrics import pearson, spearman


def bm25_pair_scores(s1: list[str], s2: list[str]) -> np.ndarray:
    """Symmetric BM25 score of each pair (float32 [N]) over an index of all 2N sentences."""
    from conan_core.eval.bm25 import BM25Index

    index = BM25Index(list(s1) + list(s2))
    n = len(s1)
    forward = index.score_pairs(s1, range(n, 2 * n))
    backward = index.score_pairs(s2, range(n))
    return (forward + backward) / 2


class STSEvaluator(Evaluator):
    """Returns ``{"spearman", "pearson", "n_pairs", "bm25/spearman", "bm25/pearson"}`` (correlations
    in [-1, 1]; NaN when a side is constant)."""

    task = "sts"

    class Config(Evaluator.Config):
        instruction: str | None = Field(
            None, description="instruction for both sentences; None = encode them plainly")

    def __init__(self, config: Config, **runtime):
        super().__init__(config, **runtime)

    def load(self, path: str | Path) -> STSData:
        return load_sts(path)

    def evaluate(self, embedder, data) -> dict:
        """Model and BM25 correlations on ``data`` (a path or an :class:`STSData`)."""
        data = self._data(data, STSData)
        enc = as_encoders(embedder, batch_size=self.config.batch_size,
                          query_instruction=self.config.instruction)
        encode = enc.plain if self.config.instruction is None else enc.query
        # one encode call for both sides: length-sorted batches mix s1 and s2 freely
        emb = l2_normalize(encode(list(data.s1) + list(data.s2))).astype(np.float64)
        n = len(data)
        cos = (emb[:n] * emb[n:]).sum(axis=1)
        out = {"spearman": spearman(cos, data.scores), "pearson": pearson(cos, data.scores), "n_pairs": n}
        if self.config.bm25:
            ref = bm25_pair_scores(data.s1, data.s2)
            out["bm25/spearman"] = spearman(ref, data.scores)
            out["bm25/pearson"] = pearson(ref, data.scores)
        return out
