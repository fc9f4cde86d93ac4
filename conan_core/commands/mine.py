"""``conan mine``: mine hard-negative candidate pools with a trained model (RECIPE §4)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from conan_core.errors import ConanError


def add_commands(sub) -> None:
    p = sub.add_parser(
        "mine", help="mine hard-negative candidate pools (faiss search with a trained model)",
        description="Encode a corpus and the training queries with a model, search the top-k "
                    "neighbours of every query and write the ranked candidates (positives excluded) "
                    "as a candidate pool: JSONL shards + manifest.json with sha256s, loadable with "
                    "conan_core.miners.pool.CandidatePool.load(DIR).")
    p.add_argument("--model", required=True, help="run directory or saved model (Embedder.load)")
    p.add_argument("--corpus", required=True,
                   help="documents: text or pairs shard directory (manifest.json) or JSONL file/directory; "
                        "text samples are documents, pairs samples contribute their 'pos' and 'neg' texts")
    p.add_argument("--queries", required=True,
                   help="training pairs (query, pos): pairs shard directory or JSONL file/directory")
    p.add_argument("--top-k", type=int, default=100, help="candidates kept per query (default 100)")
    p.add_argument("--out", required=True, help="output directory of the candidate pool")
    p.add_argument("--index", choices=["flat", "ivf", "hnsw", "torch"], default="flat",
                   help="flat (exact faiss, default), ivf, hnsw, or torch (exact, no faiss)")
    p.add_argument("--batch-size", type=int, default=64, help="encoder batch size")
    p.add_argument("--chunk-size", type=int, default=1024, help="texts per encode call / queries per search chunk")
    p.add_argument("--keep-positives", action="store_true",
                   help="do not exclude corpus texts equal to a query's positive (not recommended)")
    p.add_argument("--shard-size", type=int, default=100_000, help="examples per output shard")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_mine)


def run_mine(args: argparse.Namespace, encode_fn: Callable[[list[str]], Any] | None = None) -> int:
    """Run ``conan mine``; ``encode_fn`` replaces the model loaded from ``--model`` (tests, library use)."""
    from conan_core.miners.mining import mine_pool

    if args.top_k < 1:
        raise ConanError(f"--top-k must be >= 1 (got {args.top_k})")
    t0 = time.perf_counter()
    queries, positives = read_queries(args.queries)
    corpus = read_corpus(args.corpus)
    if encode_fn is None:
        from conan_core.embedder import Embedder

        embedder = Embedder.load(args.model)

        def encode_fn(texts: list[str]):
            return embedder.encode(texts, batch_size=args.batch_size)

    pool = mine_pool(encode_fn, queries, positives, corpus, args.top_k, index_kind=args.index,
                     exclude_positives=not args.keep_positives, chunk_size=args.chunk_size,
                     show_progress=not args.no_progress)
    pool.meta.update({"model": str(args.model), "corpus": str(args.corpus), "queries": str(args.queries),
                      "seconds": round(time.perf_counter() - t0, 3)})
    manifest = pool.save(args.out, shard_size=args.shard_size)
    m = pool.meta
    print(f"mined {len(pool)} queries x top-{args.top_k} over {m['corpus_size']} documents "
          f"({args.index}); excluded {m['excluded_false_negatives']} positive duplicate(s), "
          f"{m['short_queries']} short quer(ies); wrote {len(manifest['shards'])} shard(s) to {args.out}")
    return 0


# ----------------------------------------------------------------------------- readers

_SHARD_SOURCES = {"pairs": "pair_shards", "text": "text_shards"}


def iter_samples(path: str | Path, kind: str | None = None) -> Iterator[dict]:
    """One pass over the samples of ``path`` through the project's sources (validation, sha256
    checks, ``__key__``): a shard directory (its manifest gives the kind: pairs or text), a JSONL
    file, or a directory of JSONL files. ``kind`` is the JSONL schema; None = ``text`` when the
    first record has a ``text`` field, else ``pairs``. Bad samples raise, naming file and key."""
    from conan_core.registries import REGISTRIES

    path = Path(path)
    once = {"loop": False, "epochs": 1, "shuffle_buffer": 0, "shuffle_shards": False,
            "on_bad_sample": "raise"}
    if path.is_dir() and (path / "manifest.json").exists():
        from conan_core.data.shards import read_manifest

        shard_kind = read_manifest(path).kind
        if shard_kind not in _SHARD_SOURCES:
            raise ConanError(f"{path}: a {shard_kind!r} shard set cannot be mined; give pairs (queries) "
                             "or text / pairs (corpus) shards")
        spec = {"type": _SHARD_SOURCES[shard_kind], "path": str(path), **once}
    else:
        if path.is_dir():
            files = [str(f) for f in sorted(path.glob("*.jsonl"))]
            if not files:
                raise ConanError(f"{path}: no manifest.json and no *.jsonl files")
        elif path.is_file():
            files = [str(path)]
        else:
            raise ConanError(f"{path}: no such file or directory")
        spec = {"type": "jsonl", "path": files, "kind": kind or _sniff_kind(Path(files[0])), **once}
    yield from REGISTRIES["sources"].build(spec, rank=0, world_size=1, seed=0)


def _sniff_kind(path: Path) -> str:
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.strip():
                try:
                    first = json.loads(line)
                except json.JSONDecodeError:
                    return "pairs"  # the source reports the bad line with its location
                return "text" if isinstance(first, dict) and "text" in first else "pairs"
    return "pairs"


def read_queries(path: str | Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Queries and positives of pairs samples, keyed by
    :func:`~conan_core.miners.pool.example_id_of` (``id``, else ``__key__``): the ids the trainer
    asks the miner about."""
    from conan_core.miners.pool import example_id_of

    queries: dict[str, str] = {}
    positives: dict[str, list[str]] = {}
    for index, sample in enumerate(iter_samples(path, "pairs")):
        eid = example_id_of(sample, index)
        if eid in queries:
            raise ConanError(f"{sample.get('__url__', path)}: duplicate example id {eid!r}; give each "
                             "pair a unique 'id' (or key)")
        queries[eid] = sample["query"]
        positives[eid] = [sample["pos"]]
    if not queries:
        raise ConanError(f"{path}: no query records")
    return queries, positives


def read_corpus(path: str | Path) -> dict[str, str]:
    """Documents ``doc_id -> text``: text samples (id: ``id``/``__key__``), or pairs samples whose
    ``pos`` and ``neg`` texts become documents ``KEY:pos``, ``KEY:neg{i}``. Exact duplicate texts
    are kept once (first id), so a passage shared by many pairs is one document."""
    from conan_core.miners.pool import example_id_of

    docs: dict[str, str] = {}
    seen: set[str] = set()

    def add(doc_id: str, text: str, where: str) -> None:
        if text in seen:
            return
        if doc_id in docs:
            raise ConanError(f"{where}: duplicate document id {doc_id!r} with a different text")
        seen.add(text)
        docs[doc_id] = text

    for index, sample in enumerate(iter_samples(path)):
        key = example_id_of(sample, index)
        where = str(sample.get("__url__", path))
        if "text" in sample:
            add(key, sample["text"], where)
        else:
            add(f"{key}:pos", sample["pos"], where)
            for i, text in enumerate(sample.get("neg") or []):
                add(f"{key}:neg{i}", text, where)
    if not docs:
        raise ConanError(f"{path}: no documents")
    return docs
