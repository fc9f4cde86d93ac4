"""The batch streams the trainer pulls from, one per stage kind.

A stream has ``next_batch() -> dict`` (tensors, nested dicts of tensors, ``"keys"``: the
``(url, key)`` of every sample consumed, ``"tokens"``: real tokens in the batch), ``state_dict()``
/ ``load_state_dict()`` (the exact position), ``counters()`` and ``close()``. Optional:
``observe(observations)`` (the trainer hands it what the objective returned under
``"observations"`` after every micro-batch) and ``window_metrics()`` (plain floats logged every
``log_every`` steps, covering the steps since the previous call).

Tokenisation runs in the loader's workers (:mod:`conan_core.data.tokenize`), collation and the
hard negatives in the main process (:mod:`conan_core.train.collate`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterator

from conan_core.errors import ConanError


class LoaderStream:
    """A trainer stream over a :class:`~conan_core.data.loader.ResumableLoader`: ``next_batch()``
    is the next item, passed through ``collate`` when given (main process). A finite epoch is
    followed by the next one."""

    def __init__(self, loader: Any, collate: Callable[[Any], dict] | None = None):
        self.loader = loader
        self.collate = collate
        self._it: Iterator | None = None

    def next_item(self) -> Any:
        if self._it is None:
            self._it = iter(self.loader)
        try:
            return next(self._it)
        except StopIteration:
            self._it = iter(self.loader)
            try:
                return next(self._it)
            except StopIteration:
                raise ConanError("a training source yielded no batch in a whole epoch: it is empty or "
                                 "smaller than one batch (check the data directory and batch_size)") from None

    def next_batch(self) -> dict:
        item = self.next_item()
        return self.collate(item) if self.collate is not None else item

    def state_dict(self) -> dict:
        return {"loader": self.loader.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.close()
        self.loader.load_state_dict(state["loader"])

    def counters(self) -> dict:
        return dict(self.loader.counters())

    def close(self) -> None:
        """Stop the loader's workers (a generator's ``close`` runs its cleanup)."""
        if self._it is not None:
            self._it.close()
            self._it = None


def make_loader(items: Any, cfg: Any):
    """A :class:`~conan_core.data.loader.ResumableLoader` over ``items`` with ``data.num_workers``."""
    from conan_core.data.loader import ResumableLoader

    return ResumableLoader(items, num_workers=cfg.data.num_workers, seed=cfg.seed)


def pretrain_stream(cfg: Any, source: Any, tokenizer: Any) -> LoaderStream:
    """Packed rows of ``pretrain.max_length`` tokens (``pretrain.packing: true``)."""
    from conan_core.data.loader import Map
    from conan_core.data.packing import PackedLMBatches
    from conan_core.data.tokenize import DocTokenizer

    c = cfg.pretrain
    packed = PackedLMBatches(Map(source, DocTokenizer(tokenizer)), c.batch_size, c.max_length)
    return LoaderStream(make_loader(packed, cfg))


def docs_stream(cfg: Any, source: Any, tokenizer: Any) -> LoaderStream:
    """Unpacked pretraining batches (``pretrain.packing: false``): one document per row."""
    from conan_core.data.batching import TaskBatcher
    from conan_core.data.loader import Map
    from conan_core.data.tokenize import DocTokenizer
    from conan_core.train.collate import collate_docs, pad_id_of

    c = cfg.pretrain
    batches = TaskBatcher(Map(source, DocTokenizer(tokenizer)), c.batch_size, key=None)
    collate = functools.partial(collate_docs, pad_id=pad_id_of(tokenizer), max_length=c.max_length)
    return LoaderStream(make_loader(batches, cfg), collate)


def sft_stream(cfg: Any, source: Any, tokenizer: Any) -> LoaderStream:
    from conan_core.data.batching import TaskBatcher
    from conan_core.data.loader import Map
    from conan_core.data.tokenize import SFTTokenizer
    from conan_core.train.collate import collate_sft, pad_id_of

    c = cfg.sft
    batches = TaskBatcher(Map(source, SFTTokenizer(tokenizer)), c.batch_size, key=None)
    collate = functools.partial(collate_sft, bos=int(tokenizer.bos_token_id), eos=int(tokenizer.eos_token_id),
                                pad_id=pad_id_of(tokenizer), max_length=c.max_length)
    return LoaderStream(make_loader(batches, cfg), collate)


def weak_stream(cfg: Any, source: Any, tokenizer: Any, drop: set[str]) -> LoaderStream:
    from conan_core.data.batching import TaskBatcher
    from conan_core.data.loader import Map
    from conan_core.data.tokenize import DropIds, PairTokenizer
    from conan_core.train.collate import collate_pairs, pad_id_of

    c = cfg.weak
    pairs = DropIds(Map(source, PairTokenizer(tokenizer, c.max_length, c.query_instruction)), drop)
    batches = TaskBatcher(pairs, c.batch_size, key=None)
    return LoaderStream(make_loader(batches, cfg), functools.partial(collate_pairs, pad_id=pad_id_of(tokenizer)))


def supervised_pairs_loader(cfg: Any, source: Any, tokenizer: Any) -> LoaderStream:
    from conan_core.data.batching import TaskBatcher
    from conan_core.data.loader import Map
    from conan_core.data.tokenize import PairTokenizer

    c = cfg.supervised
    batches = TaskBatcher(Map(source, PairTokenizer(tokenizer, c.max_length, c.query_instruction)),
                          c.batch_size, key="task" if c.batching == "by_task" else None)
    return LoaderStream(make_loader(batches, cfg))


def sts_loader(cfg: Any, source: Any, tokenizer: Any) -> LoaderStream:
    from conan_core.data.batching import TaskBatcher
    from conan_core.data.loader import Map
    from conan_core.data.tokenize import STSTokenizer

    c = cfg.supervised
    batches = TaskBatcher(Map(source, STSTokenizer(tokenizer, c.max_length)), c.sts_batch_size, key=None)
    return LoaderStream(make_loader(batches, cfg))


class SupervisedStream:
    """Task-homogeneous pair batches + the miner's hard negatives + an STS batch every
    ``sts_every`` steps (on the first micro-batch of steps ``s`` with ``s % sts_every == 0``).

    The stream owns the miner (RECIPE §4: the negatives are part of the data): the batch asks it
    for each example's negatives, the trainer hands back the scores the loss computed
    (:meth:`observe`, after every micro-batch), so a replaced negative is used from the next step
    on, and the miner's state is part of the stream's state. :meth:`window_metrics` reports the
    miner's counters over the steps since the previous log line.
    """

    def __init__(self, cfg: Any, pairs: LoaderStream, sts: LoaderStream | None, miner: Any, tokenizer: Any):
        from conan_core.data.tokenize import TokenCache
        from conan_core.train.collate import pad_id_of

        self.c = cfg.supervised
        self.grad_accum = self.c.grad_accum
        self.pairs = pairs
        self.sts = sts
        self.miner = miner
        self.tokenizer = tokenizer
        self.pad_id = pad_id_of(tokenizer)
        # the negatives come back step after step from the same pools: tokenise each text once
        self.negative_tokens = TokenCache(tokenizer, self.c.max_length)
        self.calls = 0
        #: 1-based pool ranks of the negatives of the stage's first step (``metrics.json`` ``mine``)
        self.first_step_ranks: list[int] = []

    def next_batch(self) -> dict:
        from conan_core.train.collate import add_negatives, collate_pairs, collate_sts

        step, micro = self.calls // self.grad_accum + 1, self.calls % self.grad_accum
        self.calls += 1
        batch = collate_pairs(self.pairs.next_item(), self.pad_id)
        if self.miner is not None and self.miner.num_negatives > 0:
            rows = self.miner.negatives_for(batch["example_ids"])
            if step == 1:
                self.first_step_ranks.extend(int(c.rank) for row in rows for c in row)
            if rows and len(rows[0]):
                add_negatives(batch, [[c.text for c in row] for row in rows], self.tokenizer, self.c.max_length,
                              self.pad_id, self.negative_tokens)
        if self.sts is not None and micro == 0 and step % self.c.sts_every == 0:
            sts = collate_sts(self.sts.next_item(), self.pad_id)
            batch["sts"] = sts
            batch["keys"] = batch["keys"] + sts["keys"]
            batch["tokens"] += int(sts["s1"]["attention_mask"].sum() + sts["s2"]["attention_mask"].sum())
        return batch

    def observe(self, observations: dict | None) -> None:
        """Hand the scores the loss computed for this micro-batch's negatives to the miner."""
        if self.miner is None or not observations or observations.get("neg_scores") is None:
            return
        self.miner.observe(observations["example_ids"], observations["neg_scores"])

    def window_metrics(self) -> dict[str, float]:
        """The miner's counters since the previous call (then reset): replacements, scores seen,
        exhausted lists and their running totals."""
        if self.miner is None:
            return {}
        stats = self.miner.stats()
        self.miner.reset_step_stats()
        out = {"negatives_replaced": float(stats.get("replaced_step", 0)),
               "negatives_replaced_total": float(stats.get("replaced_total", 0))}
        for name in ("observed", "exhausted", "remined_examples"):
            if f"{name}_step" in stats:
                out[f"miner_{name}"] = float(stats[f"{name}_step"])
        if stats.get("score_mean_step") is not None:
            out["miner_score_mean"] = float(stats["score_mean_step"])
        return out

    def state_dict(self) -> dict:
        return {"calls": self.calls, "pairs": self.pairs.state_dict(),
                "sts": self.sts.state_dict() if self.sts is not None else None,
                "miner": self.miner.state_dict() if self.miner is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.calls = int(state["calls"])
        self.pairs.load_state_dict(state["pairs"])
        if self.sts is not None and state.get("sts") is not None:
            self.sts.load_state_dict(state["sts"])
        if self.miner is not None and state.get("miner") is not None:
            self.miner.load_state_dict(state["miner"])

    def counters(self) -> dict:
        out = dict(self.pairs.counters())
        if self.sts is not None:
            out.update({f"sts_{k}": v for k, v in self.sts.counters().items()})
        return out

    def close(self) -> None:
        self.pairs.close()
        if self.sts is not None:
            self.sts.close()
