"""Re-mining with the model being trained (DHNM v1 as RECIPE §4 reads it).

:class:`Remine` is the ``remine_fn`` the supervised stage hands to its miner: given the example ids
due for re-mining, it encodes the corpus and those examples' queries with the *current* weights
(eval mode, no gradients, the stage's mask at its final alpha) and searches again, returning a
fresh ranked pool from which ``dynamic_v1`` takes its next rank window. Other miners never call it.
One call per re-mining event (every ``interval`` optimizer steps) encodes the whole corpus once;
the cost is measured in ``benchmarks/test_remine.py``.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np
import torch


class Remine:
    """``remine(example_ids) -> CandidatePool`` over ``corpus`` (see the module docstring).

    ``objective``: the stage's :class:`~conan_core.train.objectives.EmbeddingObjective` (its
    ``embed`` is the training forward); ``queries`` / ``positives``: example id -> text, as
    :func:`conan_core.train.data.supervised_examples` gives them (queries without instruction,
    like ``conan mine``); ``alpha``: the mask's alpha to encode with; ``top_k``: pool depth.
    ``seconds`` and ``calls`` accumulate the time spent, for the stage's summary.
    """

    def __init__(self, objective: Any, tokenizer: Any, queries: Mapping[str, str], positives: Mapping[str, str],
                 corpus: Mapping[str, str], *, top_k: int, max_length: int, alpha: float, batch_size: int = 64,
                 index_kind: str = "flat"):
        self.objective = objective
        self.tokenizer = tokenizer
        self.queries = dict(queries)
        self.positives = dict(positives)
        self.corpus = dict(corpus)
        self.top_k = int(top_k)
        self.max_length = int(max_length)
        self.alpha = float(alpha)
        self.batch_size = int(batch_size)
        self.index_kind = index_kind
        self.seconds = 0.0
        self.calls = 0

    @torch.no_grad()
    def encode(self, texts: list[str]) -> np.ndarray:
        """float32 [len(texts), H] embeddings with the current weights (documents' format)."""
        from conan_core.data.tokenize import tokenize_texts
        from conan_core.train.collate import pad_id_of, pad_rows

        device = next(self.objective.parameters()).device
        pad = pad_id_of(self.tokenizer)
        out = []
        for start in range(0, len(texts), self.batch_size):
            ids, _ = tokenize_texts(self.tokenizer, texts[start:start + self.batch_size], self.max_length, None)
            batch = {k: v.to(device) for k, v in pad_rows(ids, pad).items()}
            out.append(self.objective.embed(batch, self.alpha).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 1), np.float32)

    def __call__(self, example_ids: list[str]) -> Any:
        from conan_core.miners.mining import mine_pool

        t0 = time.perf_counter()
        was_training = self.objective.training
        self.objective.eval()
        try:
            ids = [eid for eid in example_ids if eid in self.queries]
            pool = mine_pool(self.encode, {eid: self.queries[eid] for eid in ids},
                             {eid: self.positives[eid] for eid in ids}, self.corpus, self.top_k,
                             index_kind=self.index_kind)
        finally:
            self.objective.train(was_training)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return pool
