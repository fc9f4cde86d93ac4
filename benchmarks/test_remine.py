"""DHNM v1 re-mining cost (RECIPE §4, ``conan_core.train.remine``): one re-mining event (encode the
supervised corpus and the due queries with the weights being trained, search again) against one
supervised training step of the same model, measured interleaved in one run.

Setup: the tiny preset's model (d=64, 2 layers, random weights, a 400-token tokenizer trained on
standard-library docstrings), a corpus of standard-library docstring lines (every line of the
modules ``tests.utils.docstring_corpus`` reads, 200 of them kept back as queries; each repeated 5
times with ``CONAN_BENCH_FULL=1``), 32 due queries, top 40, flat index. The step is the supervised stage's
objective on 8 queries with 7 hard negatives each (forward + backward + AdamW). extra_info:
``event_over_step`` (one re-mining event / one step) and ``per_step_at_interval_100`` (the
amortised share with the paper's interval of 100 optimizer steps).
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from conan_core.builder import build_stage
from conan_core.config import load_config
from conan_core.registries import REGISTRIES
from conan_core.train.objectives import EmbeddingObjective
from conan_core.train.remine import Remine
from tests.utils import docstring_corpus

FULL = os.environ.get("CONAN_BENCH_FULL", "") == "1"
ROUNDS = 5


def test_remine_event_vs_supervised_step(benchmark, tmp_path):
    from conan_core.tokenizer import load_tokenizer, train_tokenizer
    from conan_core.train.collate import add_negatives, collate_pairs, pad_id_of
    from conan_core.data.tokenize import PairTokenizer

    lines = docstring_corpus(limit=100_000)
    n_docs = len(lines) - 200
    (tmp_path / "corpus.txt").write_text("\n".join(lines), encoding="utf-8")
    train_tokenizer([tmp_path / "corpus.txt"], 400, tmp_path / "tok", progress=False)
    tok = load_tokenizer(tmp_path / "tok")
    cfg = load_config("tiny")
    torch.manual_seed(0)
    model = REGISTRIES["backbones"].build(cfg.model).build(len(tok))
    comp = build_stage(cfg, "supervised", int(model.config.hidden_size))
    objective = EmbeddingObjective(model, comp.pooler, comp.mask, comp.loss)
    optimizer = comp.optimizer.build(objective.named_parameters(), 1e-4, 0.0)
    docs = lines[:n_docs] * (5 if FULL else 1)
    corpus = {f"d{i}": f"{t} ({i // n_docs})" if i >= n_docs else t for i, t in enumerate(docs)}
    queries = {f"q{i}": lines[n_docs + i] for i in range(200)}
    positives = {f"q{i}": lines[i] for i in range(200)}
    remine = Remine(objective, tok, queries, positives, corpus, top_k=40, max_length=96, alpha=1.0)
    due = [f"q{i}" for i in range(32)]

    pairs = PairTokenizer(tok, 96)
    items = [pairs({"query": queries[f"q{i}"], "pos": positives[f"q{i}"], "id": f"q{i}"}) for i in range(8)]
    batch = collate_pairs(items, pad_id_of(tok))
    add_negatives(batch, [[lines[50 + 7 * i + j] for j in range(7)] for i in range(8)], tok, 96, pad_id_of(tok))

    def step():
        objective.train()
        optimizer.zero_grad(set_to_none=True)
        out = objective(batch, step=1, alpha=1.0)
        out["loss"].backward()
        optimizer.step()
        return out

    pool = remine(due)  # warm-up, and the result is checked
    assert sorted(pool) == sorted(due) and all(len(pool[q]) == 40 for q in due)
    step()
    t_event, t_step = [], []
    for _ in range(ROUNDS):  # interleaved rounds
        t0 = time.perf_counter()
        remine(due)
        t1 = time.perf_counter()
        step()
        t2 = time.perf_counter()
        t_event.append(t1 - t0)
        t_step.append(t2 - t1)
    ratios = sorted(e / s for e, s in zip(t_event, t_step))
    ratio = statistics.median(ratios)
    benchmark.extra_info.update({
        "anchor": "one supervised step (8 queries x 7 hard negatives, tiny model, AdamW)",
        "corpus": len(corpus), "due_queries": len(due), "event_over_step": round(ratio, 2),
        "event_over_step_min": round(ratios[0], 2), "event_over_step_max": round(ratios[-1], 2),
        "per_step_at_interval_100": round(ratio / 100, 4)})
    benchmark.pedantic(lambda: remine(due), rounds=2, iterations=1)
    print(f"\nre-mining event = {ratio:.1f} supervised steps; amortised over 100 steps: {ratio / 100:.2%} of a step")
