"""Where each stage's data comes from: source specs, the data fingerprint, mining inputs.

Default sources (``<stage>.source`` unset), under the data root (``data.dir`` or ``RUN/data``):

=========== ============================== ===================================================
stage       source                         batches
=========== ============================== ===================================================
pretrain    ``text_shards`` pretrain/      packed rows (:class:`~conan_core.data.packing.PackedLMBatches`)
sft         ``pair_shards`` sft/           prompt = query, output = pos
weak        ``pair_shards`` sft/           (query, positive) pairs, teacher-filtered
supervised  ``pair_shards`` supervised/    task-homogeneous, ``tasks`` kept; + ``sts_shards`` sts/
=========== ============================== ===================================================

A stage whose ``source`` is set reads only that source (the supervised STS pairs:
``supervised.sts_source``), so a run whose every enabled stage names a source needs no data root
(``data.demo: false`` without ``data.dir``; :func:`conan_core.config.data_issues` names a stage
that has neither).

Every source is split by rank (and DataLoader worker), loops over epochs (so a fixed number of
steps never runs dry on an uneven rank), and is wrapped in
:class:`~conan_core.data.loader.ResumableLoader` (``data.num_workers``), whose state is the exact
position (the streams: :mod:`conan_core.train.streams`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

DEFAULT_DIRS = {"pretrain": ("text_shards", "pretrain"), "sft": ("pair_shards", "sft"),
                "weak": ("pair_shards", "sft"), "supervised": ("pair_shards", "supervised"),
                "sts": ("sts_shards", "sts")}


def data_root(cfg: Any, run_dir: Path) -> Path:
    """``data.dir`` when set, else ``RUN/data`` (the demo corpus)."""
    return Path(cfg.data.dir) if cfg.data.dir else Path(run_dir) / "data"


def eval_root(cfg: Any, run_dir: Path) -> Path:
    """The held-out evaluation data: ``eval.data`` when set, else ``eval/`` under the data root."""
    return Path(cfg.eval.data) if cfg.eval.data else data_root(cfg, run_dir) / "eval"


def uses_data_root(cfg: Any) -> bool:
    """Whether the run reads anything from the data root: the demo corpus, or an enabled stage
    without its own ``source`` (the supervised stage's optional STS data does not count)."""
    from conan_core.config import STAGES

    return cfg.data.demo or any(getattr(cfg, s).enabled and getattr(cfg, s).source is None for s in STAGES)


def source_spec(cfg: Any, stage: str, run_dir: Path, *, allow_data_change: bool = False) -> dict:
    """The source spec of ``stage`` (``"sts"`` = the supervised stage's STS data).

    ``<stage>.source`` (``supervised.sts_source`` for ``"sts"``) when set; else the default directory of the table above with
    ``data.max_chars`` and ``data.on_bad_sample``; the supervised pairs keep only
    ``supervised.tasks``.
    """
    custom = getattr(cfg, stage).source if stage != "sts" else cfg.supervised.sts_source
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


# ----------------------------------------------------------------------------- mining inputs

def supervised_examples(cfg: Any, run_dir: Path) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """``(queries, positives, corpus)`` of the supervised pairs for :func:`mine_pool`.

    Ids are :func:`~conan_core.miners.pool.example_id_of` (the ids training asks the miner about);
    the corpus is every distinct positive and negative text (ids ``d0, d1, ...`` in first-seen order).
    Queries are the raw query texts (no instruction).
    """
    from conan_core.data.samples import example_id_of

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
    from conan_core.data.samples import example_id_of

    source = one_pass(source_spec(cfg, "supervised", run_dir), seed=cfg.seed)
    pool = {}
    for index, sample in enumerate(source):
        if sample.get("neg"):
            pool[example_id_of(sample, index)] = {"candidates": list(sample["neg"]), "positive": sample["pos"],
                                                   "query": sample["query"]}
    return pool
