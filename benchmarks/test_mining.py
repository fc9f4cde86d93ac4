"""Hard-negative mining hot paths (BENCHMARKS.md row 5 and the DHNM bookkeeping budget).

1. ``dynamic_v2`` bookkeeping per step (``negatives_for`` + ``observe`` + ``reset_step_stats``) at
   B = 4 queries x 7 negatives (RECIPE retrieval batch) and B = 64, against a tiny supervised-like
   step measured in the same run: a 2-layer transformer encoder (d=128, 32 tokens)
   forward+backward over the B queries and their 1 + 7 documents with an InfoNCE loss. Interleaved
   rounds (``interleave.py``: the same 32 bookkeeping calls, 3 times over at B = 64, on a miner that
   has seen every example once, then one step; CPU time; each round keeps the fastest of 3
   bookkeeping timings and, at B = 4, of 3 steps; 24 rounds at B = 4, 10 at B = 64, whose step
   takes ~0.6 s); ``ratio_to_step`` is
   the per-round ratio of one call to one step (median and spread; target <= 1 %). The replacement
   mask is checked against a float64 scalar evaluation of the v2 rule first. The timing runs in a
   fresh interpreter (this file run as a script), so the heap left by earlier suites does not
   slow the pure-Python side.
2. Exact top-100 search: faiss ``IndexFlatIP`` against torch fp32 and bf16 ``matmul + topk``
   (chunked), in interleaved rounds. Short mode: 20k x 256 corpus, 1k queries;
   ``CONAN_BENCH_FULL=1``: 100k x 768, 10k queries. extra_info: ``torch_fp32_over_faiss`` /
   ``torch_bf16_over_faiss`` per-round time ratios and overlap@100 of each against faiss (exact
   fp32; a count, not a timing, so it has no spread); faiss itself is checked against a float64
   reference on 100 queries.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conan_core.miners.index import build_index, l2_normalize, search, torch_topk
from conan_core.miners.pool import CandidatePool
from conan_core.registries import REGISTRIES

ROOT = Path(__file__).resolve().parents[1]

FULL = os.environ.get("CONAN_BENCH_FULL", "") == "1"
N_CORPUS, DIM, N_QUERIES = (100_000, 768, 10_000) if FULL else (20_000, 256, 1_000)
TOP_K = 100
NEGS = 7
INNER = 32  # distinct bookkeeping calls (32 x 64 = all 2048 pool examples at B = 64)
ROUNDS_BOOKKEEPING = {4: 24, 64: 10}
PASSES = {4: 1, 64: 3}  # passes over the INNER calls per timing: ~5 ms at B = 4, ~50 ms at B = 64


# ----------------------------------------------------------------------------- bookkeeping

class TinyEncoder(nn.Module):
    """Token embedding + 2 transformer layers + mean pooling: the anchor's 'model'."""

    def __init__(self, vocab=1000, dim=128, layers=2):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        layer = nn.TransformerEncoderLayer(dim, 4, 256, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, layers)

    def forward(self, tokens):
        return nn.functional.normalize(self.enc(self.emb(tokens)).mean(dim=1), dim=-1)


def supervised_step(model, opt, q_tokens, d_tokens, batch):
    """InfoNCE over in-batch positives + 7 hard negatives per query, forward + backward + step."""
    opt.zero_grad(set_to_none=True)
    q = model(q_tokens)                                   # [B, d]
    d = model(d_tokens).view(batch, 1 + NEGS, -1)         # [B, 8, d]
    docs = d.reshape(batch * (1 + NEGS), -1)
    logits = q @ docs.T / 0.05
    labels = torch.arange(batch) * (1 + NEGS)
    loss = nn.functional.cross_entropy(logits, labels)
    loss.backward()
    opt.step()
    return d[:, 1:, :].detach().mul(q.detach()[:, None, :]).sum(-1)   # [B, 7] hard-negative cosines


def _rule64(s0, s):
    s0 = s if math.isnan(s0) else s0
    return s0 < 0.4 or (1.2 * s < s0 and s < 0.7)


def _bookkeeping(miner, ids, scores):
    """One training step's DHNM work: negatives for the batch, observe the scores, reset stats."""
    miner.negatives_for(ids)
    mask = miner.observe(ids, scores)
    miner.reset_step_stats()
    return mask


def _bookkeeping_setup(batch: int):
    pool = CandidatePool.toy(num_examples=2048, num_candidates=64, seed=0)
    ids_all = sorted(pool)
    gen = torch.Generator().manual_seed(0)
    score_bank = torch.rand(64, batch, NEGS, generator=gen) * 0.7 + 0.2
    return pool, ids_all, score_bank


def measure_bookkeeping(batch: int, interleave) -> dict:
    """Per-round CPU seconds of the bookkeeping (``calls`` calls) and of one tiny supervised step.

    The steady state of a training run: the miner has observed every pool example once (one
    epoch, scores from the same distribution), and every timed call revisits the same INNER
    batches with the same scores, so rounds differ by timing noise rather than by workload.
    (First visits, which set up an example's slots, cost more: 0.7 % of a step at B = 4, 0.4 % at
    B = 64 on the 2-core machine.) Each round keeps the fastest of 3 bookkeeping timings (pure
    Python, ~5-50 ms: the noisy side) and of 3 steps at B = 4 (~40 ms); one step at B = 64
    (~0.6 s, steady on its own).
    """
    pool, ids_all, score_bank = _bookkeeping_setup(batch)
    steps = [(ids_all[i * batch:(i + 1) * batch], score_bank[i % 64]) for i in range(INNER)]
    miner = REGISTRIES["miners"].build({"type": "dynamic_v2"}, pool=pool)
    epoch_scores = torch.Generator().manual_seed(2)
    for i in range(len(ids_all) // batch):
        _bookkeeping(miner, ids_all[i * batch:(i + 1) * batch],
                     torch.rand(batch, NEGS, generator=epoch_scores) * 0.7 + 0.2)

    torch.manual_seed(0)
    model = TinyEncoder()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tok = torch.Generator().manual_seed(1)
    q_tokens = torch.randint(0, 1000, (batch, 32), generator=tok)
    d_tokens = torch.randint(0, 1000, (batch * (1 + NEGS), 32), generator=tok)
    supervised_step(model, opt, q_tokens, d_tokens, batch)

    def bookkeeping_batch():
        for _ in range(PASSES[batch]):
            for ids, scores in steps:
                _bookkeeping(miner, ids, scores)

    fns = {"bookkeeping": bookkeeping_batch, "step": lambda: supervised_step(model, opt, q_tokens, d_tokens, batch)}
    rounds = interleave.interleave(fns, rounds=ROUNDS_BOOKKEEPING[batch], reduce="min",
                                   inner={"bookkeeping": 3, "step": 3 if batch == 4 else 1})
    return {"times": rounds.times, "calls": INNER * PASSES[batch], "threads": torch.get_num_threads()}


def _bookkeeping_in_subprocess(batch: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    res = subprocess.run([sys.executable, __file__, "bookkeeping", str(batch)], env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("batch", [4, 64])
def test_dynamic_v2_bookkeeping(benchmark, interleave, batch):
    # correctness: the first observation of fresh slots follows the float64 rule exactly
    pool, ids_all, score_bank = _bookkeeping_setup(batch)
    check = REGISTRIES["miners"].build({"type": "dynamic_v2"}, pool=pool)
    mask = _bookkeeping(check, ids_all[-batch:], score_bank[0])
    expected = [[_rule64(math.nan, s) for s in row] for row in score_bank[0].double().tolist()]
    assert mask.tolist() == expected

    # timed in a fresh interpreter: this pure-Python work slows down by up to 20 % in a process
    # whose heap earlier suites have grown, which made the ratio depend on what ran before it
    measured = benchmark.pedantic(_bookkeeping_in_subprocess, args=(batch,), rounds=1, iterations=1)
    rounds = interleave.Rounds(measured["times"])
    calls = measured["calls"]
    stats = rounds.ratio("bookkeeping", "step", scale=1 / calls)
    med = rounds.medians()
    book_s, step_s = med["bookkeeping"] / calls, med["step"]
    info = benchmark.extra_info
    info.update(batch=batch, negatives=NEGS, bookkeeping_s=book_s, anchor_step_s=step_s, target_ratio=0.01,
                meets_target=stats["median"] <= 0.01, threads=measured["threads"])
    interleave.record(info, "ratio_to_step", stats)
    print(f"\ndynamic_v2 bookkeeping B={batch}x{NEGS}: {book_s * 1e6:.0f} us/step, tiny supervised step "
          f"{step_s * 1e3:.1f} ms; {interleave.describe('ratio_to_step', stats)} (target <= 0.01)")


# ----------------------------------------------------------------------------- search

def _search_data():
    rng = np.random.default_rng(0)
    corpus = l2_normalize(rng.standard_normal((N_CORPUS, DIM), dtype=np.float32))
    picks = rng.integers(0, N_CORPUS, N_QUERIES)
    queries = l2_normalize(corpus[picks] + 0.5 * rng.standard_normal((N_QUERIES, DIM), dtype=np.float32))
    return corpus, queries


def _overlap(a, b):
    return float(np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a, b)]))


def test_faiss_flat_vs_torch_topk(benchmark, interleave):
    corpus, queries = _search_data()
    index = build_index(corpus, "flat", use_gpu=False)
    ct = torch.from_numpy(corpus)
    qt = torch.from_numpy(queries)
    chunk = 1024

    runs = {
        "faiss_flat": lambda: search(index, queries, TOP_K)[1],
        "torch_fp32": lambda: torch_topk(ct, qt, TOP_K, chunk_size=chunk)[1].numpy(),
        "torch_bf16": lambda: torch_topk(ct, qt, TOP_K, chunk_size=chunk, dtype=torch.bfloat16)[1].numpy(),
    }
    results = {name: fn() for name, fn in runs.items()}   # warm-up and results

    # faiss against float64 on a subset (rows without a near-tie at the 100th place)
    sub = 100
    sims = queries[:sub].astype(np.float64) @ corpus.astype(np.float64).T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :TOP_K + 1]
    top = np.take_along_axis(sims, order, axis=1)
    clear = (top[:, TOP_K - 1] - top[:, TOP_K]) > 1e-5
    ref_sets = [set(r[:TOP_K]) for r in order]
    for name in ("faiss_flat", "torch_fp32"):
        got = results[name][:sub]
        assert all(set(g) == r for g, r, c in zip(got, ref_sets, clear) if c), name
    overlaps = {f"overlap_{name}": _overlap(results[name], results["faiss_flat"]) for name in runs}
    assert overlaps["overlap_torch_fp32"] > 0.999 and overlaps["overlap_torch_bf16"] > 0.9

    rounds = benchmark.pedantic(interleave.interleave, args=(runs,),
                                kwargs={"rounds": 2 if FULL else 5, "warmup": 0},  # warmed up above
                                rounds=1, iterations=1)
    med = rounds.medians()
    stats = {"torch_fp32_over_faiss": rounds.ratio("torch_fp32", "faiss_flat"),
             "torch_bf16_over_faiss": rounds.ratio("torch_bf16", "faiss_flat")}
    gflop = 2 * N_QUERIES * N_CORPUS * DIM / 1e9
    info = benchmark.extra_info
    info.update(corpus=N_CORPUS, dim=DIM, queries=N_QUERIES, top_k=TOP_K, medians_s=med,
                faiss_gflops=gflop / med["faiss_flat"], **overlaps)
    for key, value in stats.items():
        interleave.record(info, key, value)
    print(f"\ntop-{TOP_K} search {N_QUERIES} x {N_CORPUS} x {DIM}: faiss {med['faiss_flat']:.2f}s "
          f"({gflop / med['faiss_flat']:.0f} GFLOP/s); "
          + "; ".join(interleave.describe(k, v) for k, v in stats.items())
          + f" (overlap@100 bf16 {overlaps['overlap_torch_bf16']:.3f})")


if __name__ == "__main__":
    # `python test_mining.py bookkeeping B`: the timing half of test_dynamic_v2_bookkeeping, run in
    # a fresh process by that test; prints one JSON line
    import importlib.util

    _spec = importlib.util.spec_from_file_location("conan_bench_interleave", Path(__file__).with_name("interleave.py"))
    _interleave = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = _interleave
    _spec.loader.exec_module(_interleave)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    print(json.dumps(measure_bookkeeping(int(sys.argv[2]), _interleave)))
