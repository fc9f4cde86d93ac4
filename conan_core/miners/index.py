"""Nearest-neighbour search for hard-negative mining: faiss indexes and a chunked torch top-k.

Similarity is the inner product of L2-normalised float32 embeddings, i.e. cosine. faiss is an
optional dependency (``pip install 'conan-core[cpu]'`` for faiss-cpu, ``'conan-core[gpu]'`` for
faiss-gpu) and is imported only inside the functions that need it. :func:`torch_topk` needs only
torch: it is the exact reference and the path for small corpora or a GPU without faiss-gpu.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch

from conan_core.errors import ConanError

IndexKind = Literal["flat", "ivf", "hnsw"]


class MissingDependencyError(ConanError, ImportError):
    """An optional dependency is not installed; the message says which extra installs it."""


class SearchError(ConanError, ValueError):
    """Bad input to an index function (shape, dtype, k)."""


def import_optional(module: str, *, extras: Sequence[str], purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the pip extras to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = " or ".join(f"pip install 'conan-core[{e}]'" for e in extras)
        raise MissingDependencyError(f"{purpose} needs the optional module {module!r}, which is not "
                                     f"installed ({exc}); install it with: {hint}") from exc


def require_faiss(module: str = "faiss") -> ModuleType:
    """The faiss module, or an error naming the ``cpu`` / ``gpu`` extras."""
    return import_optional(module, extras=("cpu", "gpu"),
                           purpose="faiss search (index kinds flat/ivf/hnsw)")


def faiss_gpu_available(faiss: ModuleType) -> bool:
    """True when this faiss build has GPU support and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero), as contiguous float32."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, np.float32(1e-12)), dtype=np.float32)


def encode_corpus(encode_fn: Callable[[list[str]], Any], texts: Sequence[str], chunk_size: int = 1024,
                  show_progress: bool = True, *, normalize: bool = True) -> np.ndarray:
    """Encode ``texts`` in chunks of ``chunk_size`` with ``encode_fn(list[str]) -> [len, d]`` (numpy or
    torch); return float32 ``[N, d]``, rows L2-normalised when ``normalize`` (so IP = cosine).
    A chunk of the wrong shape or with non-finite values raises naming its text range."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 (got {chunk_size})")
    texts = list(texts)
    out: np.ndarray | None = None
    bar = _progress(len(texts), "encode") if show_progress else None
    for start in range(0, len(texts), chunk_size):
        chunk = texts[start:start + chunk_size]
        emb = encode_fn(chunk)
        if isinstance(emb, torch.Tensor):
            emb = emb.detach().to(device="cpu", dtype=torch.float32).numpy()
        emb = np.asarray(emb, dtype=np.float32)
        where = f"texts[{start}:{start + len(chunk)}]"
        if emb.ndim != 2 or emb.shape[0] != len(chunk) or (out is not None and emb.shape[1] != out.shape[1]):
            expect = out.shape[1] if out is not None else "d"
            raise SearchError(f"encode_fn returned shape {emb.shape} for {where}, expected ({len(chunk)}, {expect})")
        if not np.isfinite(emb).all():
            raise SearchError(f"encode_fn returned non-finite values for {where}")
        if out is None:
            out = np.empty((len(texts), emb.shape[1]), dtype=np.float32)
        out[start:start + len(chunk)] = l2_normalize(emb) if normalize else emb
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    if out is None:
        raise SearchError("encode_corpus got no texts")
    return out


def _progress(total: int, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:  # progress is optional
        return None
    return tqdm(total=total, desc=desc, unit="text", file=sys.stderr, disable=total == 0)


def _check_matrix(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to(device="cpu", dtype=torch.float32).numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise SearchError(f"{name} must be a non-empty 2-D array [N, d] (got shape {x.shape})")
    return x


def build_index(emb: np.ndarray, kind: IndexKind = "flat", *, nlist: int | None = None,
                nprobe: int | None = None, m: int = 32, ef_construction: int = 80, ef_search: int = 128,
                use_gpu: bool | None = None) -> Any:
    """A faiss inner-product index over ``emb`` float32 [N, d] (L2-normalise first for cosine).

    * ``flat``: exact (``IndexFlatIP``);
    * ``ivf``: ``IndexIVFFlat`` with ``nlist`` lists (default ``clip(4·sqrt(N), 1, N/39)``, since
      faiss wants >= 39 training points per list) and ``nprobe`` lists searched (default
      ``max(1, nlist // 4)``); trained on ``emb`` itself;
    * ``hnsw``: ``IndexHNSWFlat`` with ``m`` links per node; ``ef_search`` (raised to k at search).

    ``use_gpu``: None = on GPU when faiss-gpu is installed and a GPU is present; True requires it
    (flat/ivf only: faiss has no GPU HNSW). Returns the faiss index (use :func:`search`).
    """
    faiss = require_faiss()
    emb = _check_matrix(emb, "emb")
    n, d = emb.shape
    if kind not in ("flat", "ivf", "hnsw"):
        raise SearchError(f"unknown index kind {kind!r}; valid: flat, ivf, hnsw")
    gpu = faiss_gpu_available(faiss) if use_gpu is None else bool(use_gpu)
    if gpu and not faiss_gpu_available(faiss):
        raise MissingDependencyError("use_gpu=True needs faiss with GPU support and a visible GPU; install "
                                     "it with: pip install 'conan-core[gpu]' (or pass use_gpu=None/False)")
    if kind == "hnsw" and gpu:
        if use_gpu:
            raise SearchError("faiss has no GPU HNSW index; use kind='flat' or 'ivf' on GPU, or use_gpu=False")
        gpu = False
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist = nlist or int(np.clip(round(4 * np.sqrt(n)), 1, max(1, n // 39)))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(emb)
        index.nprobe = min(nlist, nprobe or max(1, nlist // 4))
    else:
        index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
    if gpu:
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    index.add(emb)
    return index


def search(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` by inner product: ``(scores float32 [Q, k'], ids int64 [Q, k'])``, best first, with
    ``k' = min(k, index.ntotal)``. Approximate indexes may return fewer hits for a query: those
    slots hold id -1 and score -inf."""
    queries = _check_matrix(queries, "queries")
    if k < 1:
        raise SearchError(f"k must be >= 1 (got {k})")
    if queries.shape[1] != index.d:
        raise SearchError(f"queries have dimension {queries.shape[1]}, the index {index.d}")
    k = min(k, int(index.ntotal))
    hnsw = getattr(index, "hnsw", None)
    if hnsw is not None and hnsw.efSearch < k:
        hnsw.efSearch = k  # HNSW cannot return more than efSearch results
    scores, ids = index.search(queries, k)
    scores = np.where(ids < 0, np.float32(-np.inf), scores).astype(np.float32, copy=False)
    return scores, ids.astype(np.int64, copy=False)


def save_index(index: Any, path: str | os.PathLike) -> None:
    """Write a faiss index (a GPU index is copied to CPU first)."""
    faiss = require_faiss()
    if type(index).__name__.startswith("Gpu"):
        index = faiss.index_gpu_to_cpu(index)
    faiss.write_index(index, os.fspath(path))


def load_index(path: str | os.PathLike, *, use_gpu: bool | None = None) -> Any:
    """Read an index written by :func:`save_index` (onto the GPU under the rules of build_index)."""
    faiss = require_faiss()
    if not os.path.exists(path):
        raise SearchError(f"{path}: no such faiss index file")
    index = faiss.read_index(os.fspath(path))
    gpu = faiss_gpu_available(faiss) if use_gpu is None else bool(use_gpu)
    if gpu and getattr(index, "hnsw", None) is None:
        if not faiss_gpu_available(faiss):
            raise MissingDependencyError("use_gpu=True needs faiss with GPU support: pip install 'conan-core[gpu]'")
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    return index


def torch_topk(corpus: Any, queries: Any, k: int, chunk_size: int | None = 1024,
               dtype: torch.dtype = torch.float32, *, corpus_chunk_size: int | None = None,
               device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``k`` inner product by chunked ``matmul + topk``.

    ``corpus`` [N, d], ``queries`` [Q, d] (numpy or torch). Queries go ``chunk_size`` at a time
    (None = all at once) and, when ``corpus_chunk_size`` is set, the corpus too (running top-k
    merge), so peak extra memory is about ``chunk_size × min(N, corpus_chunk_size)`` scores.
    The products run in ``dtype`` (bfloat16 halves memory traffic on GPU) on ``device``
    (default: the corpus tensor's device, else CPU). Returns ``(scores float32 [Q, k'],
    ids int64 [Q, k'])`` on that device, best first, ``k' = min(k, N)``; equal scores may come
    in any order.
    """
    if k < 1:
        raise SearchError(f"k must be >= 1 (got {k})")
    for name, size in (("chunk_size", chunk_size), ("corpus_chunk_size", corpus_chunk_size)):
        if size is not None and size < 1:
            raise SearchError(f"{name} must be >= 1 or None (got {size})")
    if device is None:
        device = corpus.device if isinstance(corpus, torch.Tensor) else "cpu"
    c = _as_tensor(corpus, "corpus", device, dtype)
    q = _as_tensor(queries, "queries", device, dtype)
    if c.shape[1] != q.shape[1]:
        raise SearchError(f"queries have dimension {q.shape[1]}, the corpus {c.shape[1]}")
    n_q, n_c = q.shape[0], c.shape[0]
    k = min(k, n_c)
    qstep = chunk_size or n_q
    cstep = min(corpus_chunk_size or n_c, n_c)
    out_s = torch.empty((n_q, k), dtype=torch.float32, device=c.device)
    out_i = torch.empty((n_q, k), dtype=torch.int64, device=c.device)
    with torch.no_grad():
        for qs in range(0, n_q, qstep):
            qb = q[qs:qs + qstep]
            best_s = best_i = None
            for cs in range(0, n_c, cstep):
                sim = qb @ c[cs:cs + cstep].T
                s, i = sim.topk(min(k, sim.shape[1]), dim=1)
                s, i = s.float(), i + cs
                if best_s is None:
                    best_s, best_i = s, i
                else:  # merge the running top-k with this corpus chunk's
                    s = torch.cat([best_s, s], dim=1)
                    i = torch.cat([best_i, i], dim=1)
                    best_s, pos = s.topk(min(k, s.shape[1]), dim=1)
                    best_i = i.gather(1, pos)
            out_s[qs:qs + qstep] = best_s
            out_i[qs:qs + qstep] = best_i
    return out_s, out_i


def _as_tensor(x: Any, name: str, device: Any, dtype: torch.dtype) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    if t.dim() != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise SearchError(f"{name} must be a non-empty 2-D array [N, d] (got shape {tuple(t.shape)})")
    return t.to(device=device, dtype=dtype)
