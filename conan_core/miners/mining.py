"""Offline mining: encode a corpus and the queries, search, and build a :class:`CandidatePool`."""

from __future__ import annotations

import math
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np

from conan_core.miners.index import build_index, encode_corpus, search, torch_topk
from conan_core.miners.pool import Candidate, CandidatePool, PoolError, normalize_text


def mine_pool(encode_fn: Callable[[list[str]], Any], queries: Mapping[str, str],
              positives: Mapping[str, str | Sequence[str]], corpus: Mapping[str, str] | Sequence[str],
              top_k: int, *, index_kind: Literal["flat", "ivf", "hnsw", "torch"] = "flat",
              exclude_positives: bool = True, chunk_size: int = 1024, show_progress: bool = False,
              search_slack: int = 16, use_gpu: bool | None = None) -> CandidatePool:
    """Mine up to ``top_k`` ranked candidates per query.

    ``encode_fn(list[str]) -> [len, d]`` embeds texts (rows are L2-normalised here, so scores are
    cosines); ``queries``: example id -> query text; ``positives``: example id -> positive text(s);
    ``corpus``: doc id -> text, or a list (ids ``"0"``, ``"1"`` …). ``index_kind``: a faiss index
    (``flat`` exact, ``ivf``, ``hnsw``; needs ``conan-core[cpu]``/``[gpu]``) or ``torch`` (exact
    chunked matmul+topk, no faiss).

    With ``exclude_positives`` a corpus text equal to one of the example's positives after
    :func:`normalize_text` is never a candidate; the search asks for ``top_k + #positives +
    search_slack`` hits to make up for them, and ``pool.meta["excluded_false_negatives"]`` counts the
    exclusions (``short_queries``: queries left with fewer than ``top_k``). The pool also holds each
    example's query, positives and their cosine to the query (``positive_score``, used by the
    miners' TopK-PercPos filter). Candidate ``rank`` is the 1-based position after exclusion.
    """
    if top_k < 1:
        raise PoolError(f"top_k must be >= 1 (got {top_k})")
    if isinstance(corpus, Mapping):
        doc_ids, doc_texts = [str(k) for k in corpus], list(corpus.values())
    else:
        doc_texts = list(corpus)
        doc_ids = [str(i) for i in range(len(doc_texts))]
    if not doc_texts:
        raise PoolError("mine_pool: the corpus is empty")
    qids = [str(q) for q in queries]
    if not qids:
        raise PoolError("mine_pool: no queries")
    pos_lists: dict[str, list[str]] = {}
    for qid in qids:
        value = positives.get(qid, ())
        pos_lists[qid] = [value] if isinstance(value, str) else list(value)

    enc = dict(chunk_size=chunk_size, show_progress=show_progress)
    doc_emb = encode_corpus(encode_fn, doc_texts, **enc)
    q_emb = encode_corpus(encode_fn, [queries[q] for q in queries], **enc)
    flat_pos = [t for qid in qids for t in pos_lists[qid]]
    pos_emb = encode_corpus(encode_fn, flat_pos, **enc) if flat_pos else np.zeros((0, doc_emb.shape[1]), np.float32)

    max_pos = max((len(p) for p in pos_lists.values()), default=0)
    k = min(len(doc_texts), top_k + (max_pos + search_slack if exclude_positives else 0))
    if index_kind == "torch":
        s, i = torch_topk(doc_emb, q_emb, k, chunk_size=chunk_size)
        scores, ids = s.numpy(), i.numpy()
    else:
        index = build_index(doc_emb, index_kind, use_gpu=use_gpu)
        scores, ids = search(index, q_emb, k)

    norm_cache: dict[int, str] = {}
    candidates: dict[str, list[Candidate]] = {}
    pos_scores: dict[str, list[float]] = {}
    excluded = short = 0
    offset = 0
    for row, qid in enumerate(qids):
        plist = pos_lists[qid]
        pos_scores[qid] = [float(np.dot(q_emb[row], pos_emb[offset + j])) for j in range(len(plist))]
        offset += len(plist)
        banned = {normalize_text(t) for t in plist} if exclude_positives else set()
        kept: list[Candidate] = []
        for score, doc in zip(scores[row].tolist(), ids[row].tolist()):
            if doc < 0 or len(kept) >= top_k:
                continue
            if banned:
                norm = norm_cache.get(doc)
                if norm is None:
                    norm = norm_cache[doc] = normalize_text(doc_texts[doc])
                if norm in banned:
                    excluded += 1
                    continue
            kept.append(Candidate(doc_ids[doc], doc_texts[doc], float(score) if math.isfinite(score) else math.nan,
                                  len(kept) + 1))
        short += int(len(kept) < min(top_k, len(doc_texts)))
        candidates[qid] = kept
    meta = {"top_k": top_k, "index_kind": index_kind, "corpus_size": len(doc_texts), "num_queries": len(qids),
            "exclude_positives": exclude_positives, "excluded_false_negatives": excluded,
            "short_queries": short, "dim": int(doc_emb.shape[1])}
    return CandidatePool(candidates, positives={q: p for q, p in pos_lists.items() if p},
                         positive_scores={q: s for q, s in pos_scores.items() if s},
                         queries={q: queries[q] for q in queries}, meta=meta)
