"""Nearest-neighbour search: torch_topk and faiss indexes against a float64 reference, chunking,
approximate recall, save/load, the missing-faiss error, lazy import and the memory budget."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conan_core.miners.index import (MissingDependencyError, SearchError, build_index, encode_corpus,
                                     import_optional, l2_normalize, load_index, require_faiss, save_index,
                                     search, torch_topk)


def _data(n=3000, q=200, d=32, seed=0, clustered=False):
    rng = np.random.default_rng(seed)
    if clustered:
        centers = rng.standard_normal((40, d))
        x = centers[rng.integers(0, 40, n)] + 0.3 * rng.standard_normal((n, d))
    else:
        x = rng.standard_normal((n, d))
    queries = x[rng.integers(0, n, q)] + 0.2 * rng.standard_normal((q, d))
    return l2_normalize(x), l2_normalize(queries)


ROOT = Path(__file__).resolve().parents[2]


def _reference(corpus, queries, k):
    """float64 exact top-k; also the gap after the k-th score (to skip true near-ties)."""
    sims = queries.astype(np.float64) @ corpus.astype(np.float64).T
    order = np.argsort(-sims, axis=1, kind="stable")
    top = np.take_along_axis(sims, order[:, :k + 1], axis=1)
    return top[:, :k], order[:, :k], np.min(top[:, :-1] - top[:, 1:], axis=1)


def _assert_topk(scores, ids, corpus, queries, k):
    ref_s, ref_i, gap = _reference(corpus, queries, k)
    clear = gap > 1e-5  # rows whose top-k+1 holds no float32 near-tie
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(np.asarray(ids)[clear], ref_i[clear])
    np.testing.assert_allclose(np.asarray(scores), ref_s, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_torch_topk_matches_float64_reference(seed):
    corpus, queries = _data(seed=seed)
    s, i = torch_topk(corpus, queries, 10)
    assert s.dtype == torch.float32 and i.dtype == torch.int64 and s.shape == (200, 10)
    _assert_topk(s.numpy(), i.numpy(), corpus, queries, 10)


@pytest.mark.parametrize("chunk,cchunk", [(1, None), (7, None), (64, 5), (200, 333), (None, 1000)])
def test_chunked_equals_unchunked(chunk, cchunk):
    corpus, queries = _data(n=2000, q=100, seed=3)
    s0, i0 = torch_topk(corpus, queries, 10, chunk_size=None)
    s1, i1 = torch_topk(corpus, queries, 10, chunk_size=chunk, corpus_chunk_size=cchunk)
    assert torch.equal(i0, i1)
    assert torch.allclose(s0, s1, atol=1e-6)


def test_torch_topk_bfloat16_is_close_and_k_is_capped():
    corpus, queries = _data(n=500, q=50)
    s, i = torch_topk(corpus, queries, 10, dtype=torch.bfloat16)
    ref_s, ref_i, _ = _reference(corpus, queries, 10)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i.numpy(), ref_i)])
    assert overlap > 0.8 and s.dtype == torch.float32
    s, i = torch_topk(corpus[:5], queries, 10)
    assert s.shape == (50, 5)
    with pytest.raises(SearchError, match="dimension"):
        torch_topk(corpus, queries[:, :3], 2)


def test_faiss_flat_equals_torch_topk_and_reference():
    corpus, queries = _data(seed=4)
    fs, fi = search(build_index(corpus, "flat"), queries, 10)
    ts, ti = torch_topk(corpus, queries, 10)
    assert fs.dtype == np.float32 and fi.dtype == np.int64
    _assert_topk(fs, fi, corpus, queries, 10)
    ref_gap = _reference(corpus, queries, 10)[2] > 1e-5
    np.testing.assert_array_equal(fi[ref_gap], ti.numpy()[ref_gap])
    np.testing.assert_allclose(fs, ts.numpy(), atol=1e-5)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_have_high_recall(kind):
    corpus, queries = _data(n=2000, q=100, clustered=True, seed=5)
    _, exact = search(build_index(corpus, "flat"), queries, 10)
    index = build_index(corpus, kind)
    scores, ids = search(index, queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, ids)])
    assert recall >= 0.95, recall
    assert np.all(np.diff(scores, axis=1) <= 1e-6)   # best first
    _, many = search(index, queries[:3], 300)         # k above HNSW's efSearch still returns k
    assert many.shape == (3, 300)


def test_save_and_load_index(tmp_path):
    corpus, queries = _data(n=500, q=20)
    index = build_index(corpus, "ivf", nlist=8)
    save_index(index, tmp_path / "i.faiss")
    again = load_index(tmp_path / "i.faiss", use_gpu=False)
    for a, b in zip(search(index, queries, 5), search(again, queries, 5)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(SearchError, match="no such"):
        load_index(tmp_path / "missing.faiss")


def test_missing_optional_module_names_the_extra():
    with pytest.raises(MissingDependencyError) as err:
        require_faiss("faiss_module_that_does_not_exist")
    assert "pip install 'conan-core[cpu]'" in str(err.value) and "conan-core[gpu]" in str(err.value)
    with pytest.raises(MissingDependencyError, match=r"conan-core\[plots\]"):
        import_optional("no_such_module_xyz", extras=("plots",), purpose="plotting")


def test_use_gpu_without_faiss_gpu_is_a_clear_error():
    corpus, _ = _data(n=100, q=1)
    if hasattr(require_faiss(), "StandardGpuResources") and require_faiss().get_num_gpus() > 0:
        pytest.skip("this machine has faiss-gpu and a GPU")
    with pytest.raises(MissingDependencyError, match=r"conan-core\[gpu\]"):
        build_index(corpus, "flat", use_gpu=True)
    assert build_index(corpus, "flat", use_gpu=None).ntotal == 100   # auto falls back to CPU


def test_importing_the_miners_does_not_import_faiss_or_matplotlib():
    code = ("import sys, conan_core.miners.index, conan_core.miners.mining, conan_core.miners.dynamic_v2, "
            "conan_core.miners.dynamic_v1, conan_core.miners.static, conan_core.miners.plot, "
            "conan_core.commands.mine; "
            "bad = [m for m in ('faiss', 'matplotlib') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_encode_corpus_chunks_normalises_and_validates():
    rng = np.random.default_rng(0)
    table = {f"t{i}": rng.standard_normal(8) * (i + 1) for i in range(10)}
    texts = list(table)

    def encode(batch):
        return np.stack([table[t] for t in batch])

    one = encode_corpus(encode, texts, chunk_size=100, show_progress=False)
    chunked = encode_corpus(encode, texts, chunk_size=3, show_progress=False)
    np.testing.assert_array_equal(one, chunked)
    assert one.dtype == np.float32 and np.allclose(np.linalg.norm(one, axis=1), 1, atol=1e-6)
    ref = np.stack([table[t] / np.linalg.norm(table[t]) for t in texts])
    np.testing.assert_allclose(one, ref, atol=1e-6)
    torch_out = encode_corpus(lambda b: torch.from_numpy(encode(b)), texts, show_progress=False)
    np.testing.assert_array_equal(torch_out, one)
    with pytest.raises(SearchError, match=r"texts\[3:6\]"):
        encode_corpus(lambda b: encode(b)[:, :4] if b[0] == "t3" else encode(b), texts, chunk_size=3,
                      show_progress=False)
    with pytest.raises(SearchError, match="non-finite"):
        encode_corpus(lambda b: encode(b) * np.nan, texts, show_progress=False)


def test_chunked_and_full_agree_on_a_2k_subset():
    corpus, _ = _data(n=2000, q=1, d=32, seed=9)
    s0, i0 = torch_topk(corpus, corpus, 10, chunk_size=None)
    s1, i1 = torch_topk(corpus, corpus, 10, chunk_size=512, corpus_chunk_size=700)
    assert torch.equal(i0, i1) and torch.equal(i0[:, 0], torch.arange(2000))
