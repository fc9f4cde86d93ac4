"""Where each stage's data comes from, and the resumable batch streams the trainer pulls from.

Default sources (``<stage>.source`` unset), under the data root (``data.dir`` or ``RUN/data``):

=========== ============================== ===================================================
stage       source                         batches
=========== ============================== ===================================================
pretrain    ``text_shards`` pretrain/      packed rows (:class:`~conan_core.train.collate.PackedLMBatches`)
sft         ``pair_shards`` sft/           prompt = query, output = pos
weak        ``pair_shards`` sft/           (query, positive) pairs, teacher-filtered
supervised  ``pair_shards`` supervised/    task-homogeneous, ``tasks`` kept; + ``sts_shards`` sts/
=========== ============================== ===================================================

Every source is split by rank (and DataLoader worker), loops over epochs (so a fixed number of
steps never runs dry on an uneven rank), and is wrapped in
:class:`~conan_core.sources.reader.ResumableLoader` (``data.num_workers``), whose state is the exact
position: tokenisation runs in the workers, negatives and padding in the main process.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Iterator

from conan_core.errors import ConanError

DEFAULT_DIRS = {"pretrain": ("text_shards", "pretrain"), "sft": ("pair_shards", "sft"),
                "weak": ("pair_shards", "sft"), "supervised": ("pair_shards", "supervised"),
                "sts": ("sts_shards", "sts")}


def data_root(cfg: Any, run_dir: Path) -> Path:
    """``data.dir`` when set, else ``RUN/data`` (the demo corpus)."""
    return Path(cfg.data.dir) if cfg.data.dir else Path(run_dir) / "data"


def source_spec(cfg: Any, stage: str, run_dir: Path, *, allow_data_change: bool = False) -> dict:
    """The source spec of ``stage`` (``"sts"`` = the supervised stage's STS data).

    ``<stage>.source`` when set; else the default directory of the table above with
    ``data.max_chars`` and ``data.on_bad_sample``; the supervised pairs keep only
    ``supervised.tasks``.
    """
    custom = getattr(cfg, stage).source if stage != "sts" else None
    if custom is not None:
        spec = dict(custom)
    else:
        key, sub = DEFAULT_DIRS[stage]
        spec = {"type": key, "path": str(data_root(cfg, run_dir) / sub), "max_chars": cfg.data.max_chars,
                "on_bad_sample": cfg.data.on_bad_sample}
        if stage == "supervised":
            spec["tasks"] = list(cfg.supervised.tasks)
    if allow_data_change:
        spec["allow_data_change"] = True
    return spec


def build_source(spec: dict, *, rank: int = 0, world_size: int = 1, seed: int = 0, path: str = "source"):
    from conan_core.registries import REGISTRIES

    return REGISTRIES["sources"].build(spec, path, rank=rank, world_size=world_size, seed=seed)


def one_pass(spec: dict, *, rank: int = 0, world_size: int = 1, seed: int = 0):
    """The source read once, in order (no loop, no shuffling): for teacher scoring and mining."""
    spec = {**spec, "loop": False, "epochs": 1, "shuffle_buffer": 0, "shuffle_shards": False}
    return build_source(spec, rank=rank, world_size=world_size, seed=seed)


def fingerprint(*parts: Any) -> str:
    """sha256 over the given sources' data fingerprints (or specs) and plain values."""
    h = hashlib.sha256()
    for part in parts:
        fp = getattr(part, "fingerprint", None)
        if isinstance(fp, str):
            h.update(fp.encode())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


def file_hash(path: Path) -> str:
    from conan_core.fsio import sha256_file

    return sha256_file(path) if Path(path).is_file() else "missing"


# ----------------------------------------------------------------------------- streams

class LoaderStream:
    """A trainer stream over a :class:`ResumableLoader`: ``next_batch()`` is the next item, passed
    through ``collate`` when given (main process). A finite epoch is followed by the next one."""

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


def make_loader(stage_obj: Any, cfg: Any):
    from conan_core.sources.reader import ResumableLoader

    return ResumableLoader(stage_obj, num_workers=cfg.data.num_workers, seed=cfg.seed)


def pretrain_stream(cfg: Any, source: Any, tokenizer: Any) -> LoaderStream:
    from conan_core.sources.reader import Map
    from conan_core.train.collate import DocTokenizer, PackedLMBatches

    c = cfg.pretrain
    packed = PackedLMBatches(Map(source, DocTokenizer(tokenizer)), c.batch_size, c.max_length)
    return LoaderStream(make_loader(packed, cfg))


def docs_stream(cfg: Any, source: Any, tokenizer: Any) -> LoaderStream:
    """Unpacked pretraining batches (``pretrain.packing: false``): one document per row."""
    from conan_core.data.batching import TaskBatcher
    from conan_core.sources.reader import Map
    from conan_core.train.collate import DocTokenizer, collate_docs, pad_id_of

    c = cfg.pretrain
    batches = TaskBatcher(Map(source, DocTokenizer(tokenizer)), c.batch_size, key=None)
    collate = functools.partial(collate_docs, pad_id=pad_id_of(tokenizer), max_length=c.max_length)
    return LoaderStream(make_loader(batches, cfg), collate)


def sft_stream(cfg: Any, source: Any, tokenizer: Any) -> LoaderStream:
    from conan_core.data.batching import TaskBatcher
    from conan_core.sources.reader import Map
    from conan_core.train.collate import SFTTokenizer, collate_sft, pad_id_of

    c = cfg.sft
    batches = TaskBatcher(Map(source, SFTTokenizer(tokenizer)), c.batch_size, key=None)
    collate = functools.partial(collate_sft, bos=int(tokenizer.bos_token_id), eos=int(tokenizer.eos_token_id),
                                pad_id=pad_id_of(tokenizer), max_length=c.max_length)
    return LoaderStream(make_loader(batches, cfg), collate)


def weak_stream(cfg: Any, source: Any, tokenizer: Any, drop: set[str]) -> LoaderStream:
    from conan_core.data.batching import TaskBatcher
    from conan_core.sources.reader import Map
    from conan_core.train.collate import DropIds, PairTokenizer, collate_pairs, pad_id_of

    c = cfg.weak
    pairs = DropIds(Map(source, PairTokenizer(tokenizer, c.max_length, c.query_instruction)), drop)
    batches = TaskBatcher(pairs, c.batch_size, key=None)
    return LoaderStream(make_loader(batches, cfg), functools.partial(collate_pairs, pad_id=pad_id_of(tokenizer)))


class SupervisedStream:
    """Task-homogeneous pair batches + the miner's hard negatives + an STS batch every
    ``sts_every`` steps (on the first micro-batch of steps ``s`` with ``s % sts_every == 0``).

    Negatives are asked from the miner when the batch is built, i.e. after the previous step's
    ``observe``, so a replaced negative is used from the next step on (RECIPE §4).
    """

    def __init__(self, cfg: Any, pairs: LoaderStream, sts: LoaderStream | None, miner: Any, tokenizer: Any):
        from conan_core.train.collate import pad_id_of

        self.c = cfg.supervised
        self.grad_accum = self.c.grad_accum
        self.pairs = pairs
        self.sts = sts
        self.miner = miner
        self.tokenizer = tokenizer
        self.pad_id = pad_id_of(tokenizer)
        self.calls = 0

    def next_batch(self) -> dict:
        from conan_core.train.collate import add_negatives, collate_pairs, collate_sts

        step, micro = self.calls // self.grad_accum + 1, self.calls % self.grad_accum
        self.calls += 1
        batch = collate_pairs(self.pairs.next_item(), self.pad_id)
        if self.miner is not None and self.c.num_negatives > 0:
            rows = self.miner.negatives_for(batch["example_ids"])
            if rows and len(rows[0]):
                add_negatives(batch, [[c.text for c in row] for row in rows], self.tokenizer, self.c.max_length,
                              self.pad_id)
        if self.sts is not None and micro == 0 and step % self.c.sts_every == 0:
            sts = collate_sts(self.sts.next_item(), self.pad_id)
            batch["sts"] = sts
            batch["keys"] = batch["keys"] + sts["keys"]
            batch["tokens"] += int(sts["s1"]["attention_mask"].sum() + sts["s2"]["attention_mask"].sum())
        return batch

    def state_dict(self) -> dict:
        return {"calls": self.calls, "pairs": self.pairs.state_dict(),
                "sts": self.sts.state_dict() if self.sts is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.calls = int(state["calls"])
        self.pairs.load_state_dict(state["pairs"])
        if self.sts is not None and state.get("sts") is not None:
            self.sts.load_state_dict(state["sts"])

    def counters(self) -> dict:
        out = dict(self.pairs.counters())
        if self.sts is not None:
            out.update({f"sts_{k}": v for k, v in self.sts.counters().items()})
        return out

    def close(self) -> None:
        self.pairs.close()
        if self.sts is not None:
            self.sts.close()


def supervised_pairs_loader(cfg: Any, source: Any, tokenizer: Any) -> LoaderStream:
    from conan_core.data.batching import TaskBatcher
    from conan_core.sources.reader import Map
    from conan_core.train.collate import PairTokenizer

    c = cfg.supervised
    batches = TaskBatcher(Map(source, PairTokenizer(tokenizer, c.max_length, c.query_instruction)),
                          c.batch_size, key="task")
    return LoaderStream(make_loader(batches, cfg))


def sts_loader(cfg: Any, source: Any, tokenizer: Any) -> LoaderStream:
    from conan_core.data.batching import TaskBatcher
    from conan_core.sources.reader import Map
    from conan_core.train.collate import STSTokenizer

    c = cfg.supervised
    batches = TaskBatcher(Map(source, STSTokenizer(tokenizer, c.max_length)), c.sts_batch_size, key=None)
    return LoaderStream(make_loader(batches, cfg))


# ----------------------------------------------------------------------------- mining inputs

def supervised_examples(cfg: Any, run_dir: Path) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """``(queries, positives, corpus)`` of the supervised pairs for :func:`mine_pool`.

    Ids are :func:`~conan_core.miners.pool.example_id_of` (the ids training asks the miner about);
    the corpus is every distinct positive and negative text (ids ``d0, d1, ...`` in first-seen order).
    Queries are the raw query texts (no instruction).
    """
    from conan_core.miners.pool import example_id_of

    source = one_pass(source_spec(cfg, "supervised", run_dir), seed=cfg.seed)
    queries: dict[str, str] = {}
    positives: dict[str, str] = {}
    corpus_ids: dict[str, str] = {}
    for index, sample in enumerate(source):
        eid = example_id_of(sample, index)
        queries[eid] = sample["query"]
        positives[eid] = sample["pos"]
        for text in (sample["pos"], *sample.get("neg", [])):
            corpus_ids.setdefault(text, f"d{len(corpus_ids)}")
    corpus = {doc_id: text for text, doc_id in corpus_ids.items()}
    return queries, positives, corpus


def shard_pool(cfg: Any, run_dir: Path) -> dict:
    """A candidate pool from the supervised shards' own ``neg`` lists (used when no mined pool exists):
    ``{example_id: {"candidates": negs, "positive": pos, "query": query}}``."""
    from conan_core.miners.pool import example_id_of

    source = one_pass(source_spec(cfg, "supervised", run_dir), seed=cfg.seed)
    pool = {}
    for index, sample in enumerate(source):
        if sample.get("neg"):
            pool[example_id_of(sample, index)] = {"candidates": list(sample["neg"]), "positive": sample["pos"],
                                                   "query": sample["query"]}
    return pool
