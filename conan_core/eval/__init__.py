"""Evaluation: retrieval / cross-lingual / STS / classification evaluators (registry kind
``evaluators``), each next to a BM25 reference; pure metric functions; eval data loading; the
results table; an mteb adapter.

Modules: ``metrics`` (nDCG@k, Recall@k, MRR@k, Spearman), ``bm25`` (bm25s wrapper), ``data``
(JSONL formats), ``retrieval`` / ``cross_lingual`` / ``sts`` / ``classification`` (evaluators),
``report`` (evaluate_all, format_table, metrics.json), ``mteb`` (MTEBEncoder). Importing this
package imports none of them.
"""
