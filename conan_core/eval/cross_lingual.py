"""``cross_lingual``: per query language Recall@20, Recall@100 and nDCG@10 (the MKQA protocol,
RECIPE §7: questions in many languages searched over one passage corpus), plus their macro average
over languages, next to BM25.

Data: ``eval/cross_lingual/`` with the retrieval files; each query's ``lang`` names its language
(queries without one are grouped under ``"und"``). All queries search the same corpus. Recall@k is
|relevant ∩ top-k| / |relevant| (with one relevant passage per question, as in MKQA, this is the
hit rate).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveInt

from conan_core.eval.base import Evaluator, is_count
from conan_core.eval.data import RetrievalData, load_retrieval
from conan_core.eval.metrics import retrieval_metrics
from conan_core.eval.retrieval import bm25_rankings, model_rankings

UNDETERMINED = "und"


class CrossLingualEvaluator(Evaluator):
    """Returns ``{"recall@20", "recall@100", "ndcg@10"}`` (macro over languages), the same per
    language as ``"lang/<lang>/recall@20"`` ..., ``"bm25/<metric>"`` for each, and the counts
    ``n_queries``, ``n_docs``, ``n_languages``, ``lang/<lang>/n_queries``. Cut-offs larger than the
    corpus are capped to its size (names unchanged)."""

    task = "cross_lingual"

    class Config(Evaluator.Config):
        recall_k: list[PositiveInt] = Field(default_factory=lambda: [20, 100], min_length=1,
                                            description="Recall@k cut-offs (MKQA: 20 and 100)")
        ndcg_k: int = Field(10, gt=0, description="nDCG@k cut-off (MKQA: 10)")
        index: Literal["flat", "torch"] = Field("flat", description="flat = exact faiss IP; torch = exact torch top-k")
        query_instruction: str | None = Field(
            None, description="instruction for queries; None = the embedder's own (from the run)")
        subdir: str = Field("cross_lingual", description="directory of the data under the eval root")

    def __init__(self, config: Config, **runtime):
        super().__init__(config, **runtime)

    def load(self, path: str | Path) -> RetrievalData:
        return load_retrieval(path, self.config.subdir)

    def score(self, rankings: dict[str, list[str]], data: RetrievalData) -> dict:
        """Per-language and macro-averaged metrics of ``rankings``."""
        n_docs = len(data.doc_ids)
        ndcg_name, ndcg_k = f"ndcg@{self.config.ndcg_k}", min(self.config.ndcg_k, n_docs)
        recall = {f"recall@{k}": min(k, n_docs) for k in self.config.recall_k}
        by_lang: dict[str, dict] = {}
        for qid, lang in zip(data.query_ids, data.query_langs):
            if qid in data.qrels:
                by_lang.setdefault(lang or UNDETERMINED, {})[qid] = data.qrels[qid]
        out: dict = {}
        macro: dict[str, list[float]] = {name: [] for name in (*recall, ndcg_name)}
        total = 0
        for lang in sorted(by_lang):
            res = retrieval_metrics(rankings, by_lang[lang], ndcg_k=[ndcg_k],
                                    recall_k=sorted(set(recall.values())), mrr_k=[ndcg_k])
            if res["n_queries"] == 0:  # only non-relevant qrels in this language
                continue
            values = {name: res[f"recall@{k}"] for name, k in recall.items()}
            values[ndcg_name] = res[f"ndcg@{ndcg_k}"]
            for name, value in values.items():
                out[f"lang/{lang}/{name}"] = value
                macro[name].append(value)
            out[f"lang/{lang}/n_queries"] = res["n_queries"]
            total += res["n_queries"]
        for name, values in macro.items():
            out[name] = sum(values) / len(values) if values else 0.0
        out["n_queries"] = total
        out["n_languages"] = len(macro[ndcg_name])
        return out

    def evaluate(self, embedder, data) -> dict:
        """Model and BM25 metrics on ``data`` (a path or a :class:`RetrievalData`)."""
        data = self._data(data, RetrievalData)
        depth = min(max(*self.config.recall_k, self.config.ndcg_k), len(data.doc_ids))
        out = self.score(model_rankings(embedder, data, depth, batch_size=self.config.batch_size,
                                        index=self.config.index,
                                        query_instruction=self.config.query_instruction), data)
        out["n_docs"] = len(data.doc_ids)
        if self.config.bm25:
            ref = self.score(bm25_rankings(data, depth), data)
            out.update({f"bm25/{k}": v for k, v in ref.items() if not is_count(k)})
        return out

