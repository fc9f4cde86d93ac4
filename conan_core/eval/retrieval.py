"""``retrieval``: nDCG@10, Recall@k, MRR@10 of queries searched over a corpus, next to BM25.

Queries are encoded with the query instruction (``Embedder.encode_queries``), documents without
(``encode_corpus``); both are L2-normalised and searched by inner product (cosine) with an exact
faiss flat index (``conan_core.miners.index``), or with an exact torch top-k when faiss is not
installed or ``index: torch`` is set. Metric conventions: :mod:`conan_core.eval.metrics`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, PositiveInt

from conan_core.eval.base import Evaluator, as_encoders, is_count, l2_normalize
from conan_core.eval.data import RetrievalData, load_retrieval
from conan_core.eval.metrics import retrieval_metrics


def dense_search(corpus: np.ndarray, queries: np.ndarray, k: int,
                 index: Literal["flat", "torch"] = "flat") -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``min(k, N)`` inner-product search: (scores float32 [Q, k], ids int64 [Q, k]).

    ``index="flat"`` uses a faiss flat IP index and falls back to the torch top-k when faiss is
    not importable; both are exact, so they return the same ids up to ties.
    """
    from conan_core.miners import index as mindex

    corpus = np.ascontiguousarray(corpus, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = max(1, min(int(k), corpus.shape[0]))
    if queries.shape[0] == 0:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    if index == "flat":
        try:
            built = mindex.build_index(corpus, kind="flat")
        except ImportError:  # faiss missing: the exact torch search gives the same ranking
            built = None
        if built is not None:
            scores, ids = mindex.search(built, queries, k)
            return np.asarray(scores, np.float32), np.asarray(ids, np.int64)
    scores, ids = mindex.torch_topk(corpus, queries, k)
    return _to_numpy(scores, np.float32), _to_numpy(ids, np.int64)


def _to_numpy(x, dtype) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def model_rankings(embedder, data: RetrievalData, depth: int, *, batch_size: int = 64,
                   index: Literal["flat", "torch"] = "flat",
                   query_instruction: str | None = None) -> dict[str, list[str]]:
    """Query id -> the ``min(depth, N)`` doc ids of the highest cosine, best first."""
    enc = as_encoders(embedder, batch_size=batch_size, query_instruction=query_instruction)
    docs = l2_normalize(enc.corpus(data.doc_texts))
    queries = l2_normalize(enc.query(data.query_texts))
    _, ids = dense_search(docs, queries, depth, index)
    return {qid: [data.doc_ids[j] for j in row] for qid, row in zip(data.query_ids, ids)}


def bm25_rankings(data: RetrievalData, depth: int) -> dict[str, list[str]]:
    """The same with BM25 (query text without any instruction)."""
    from conan_core.eval.bm25 import BM25Index

    _, ids = BM25Index(data.doc_texts).search(data.query_texts, depth)
    return {qid: [data.doc_ids[j] for j in row] for qid, row in zip(data.query_ids, ids)}


class RetrievalEvaluator(Evaluator):
    """Retrieval over ``eval/retrieval/`` (queries, corpus, graded qrels).

    Returns ``{"ndcg@10", "recall@1", "recall@10", "recall@100", "mrr@10", "n_queries", "n_docs",
    "bm25/ndcg@10", ...}``; recall cut-offs larger than the corpus are capped to its size (the
    metric keeps the configured name, so tables stay comparable across data sets).
    """

    task = "retrieval"

    class Config(Evaluator.Config):
        recall_k: list[PositiveInt] = Field(default_factory=lambda: [1, 10, 100], min_length=1,
                                            description="Recall@k cut-offs (capped by the corpus size)")
        ndcg_k: int = Field(10, gt=0, description="nDCG@k cut-off")
        mrr_k: int = Field(10, gt=0, description="MRR@k cut-off")
        index: Literal["flat", "torch"] = Field("flat", description="flat = exact faiss IP; torch = exact torch top-k")
        query_instruction: str | None = Field(
            None, description="instruction for queries; None = the embedder's own (from the run)")
        subdir: str = Field("retrieval", description="directory of the data under the eval root")

    def __init__(self, config: Config, **runtime):
        super().__init__(config, **runtime)

    def load(self, path: str | Path) -> RetrievalData:
        return load_retrieval(path, self.config.subdir)

    def _cutoffs(self, n_docs: int) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        """{metric name: effective k}: the configured names, k capped by the corpus size."""
        c = self.config
        cap = lambda k: min(int(k), n_docs)  # noqa: E731
        return ({f"ndcg@{c.ndcg_k}": cap(c.ndcg_k)},
                {f"recall@{k}": cap(k) for k in c.recall_k},
                {f"mrr@{c.mrr_k}": cap(c.mrr_k)})

    def rank(self, embedder, data: RetrievalData, depth: int) -> dict[str, list[str]]:
        """Model rankings: query id -> doc ids best first, ``min(depth, N)`` each."""
        return model_rankings(embedder, data, depth, batch_size=self.config.batch_size,
                              index=self.config.index, query_instruction=self.config.query_instruction)

    def score(self, rankings: dict[str, list[str]], qrels: dict, n_docs: int) -> dict:
        """The configured metrics of ``rankings`` (see the class docstring for the names)."""
        ndcg, recall, mrr = self._cutoffs(n_docs)
        res = retrieval_metrics(rankings, qrels, ndcg_k=sorted(set(ndcg.values())),
                                recall_k=sorted(set(recall.values())), mrr_k=sorted(set(mrr.values())))
        out = {}
        for names, prefix in ((ndcg, "ndcg"), (recall, "recall"), (mrr, "mrr")):
            for name, k in names.items():
                out[name] = res[f"{prefix}@{k}"]
        out["n_queries"] = res["n_queries"]
        return out

    def evaluate(self, embedder, data) -> dict:
        """Model and BM25 metrics on ``data`` (a path or a :class:`RetrievalData`)."""
        data = self._data(data, RetrievalData)
        n_docs = len(data.doc_ids)
        depth = max(max(v.values()) for v in self._cutoffs(n_docs))
        out = self.score(self.rank(embedder, data, depth), data.qrels, n_docs)
        out["n_docs"] = n_docs
        if self.config.bm25:
            ref = self.score(bm25_rankings(data, depth), data.qrels, n_docs)
            out.update({f"bm25/{k}": v for k, v in ref.items() if not is_count(k)})
        return out
