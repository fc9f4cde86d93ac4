"""Candidate pools: the ranked hard-negative candidates of each training example.

A pool maps ``example_id -> list[Candidate]`` ranked best-first (``rank`` is the 1-based position
in that list) and also knows, per example, the positive text(s), their score(s) and the query, which
the positive-aware filters of the miners need.

On disk (``CandidatePool.save(DIR)``) a pool is a few JSONL shards plus ``manifest.json`` recording
each shard's example count and sha256; ``CandidatePool.load`` checks every hash. One row per example::

    {"id": "q17", "query": "...", "positive": "text" | ["text", ...],
     "positive_score": 0.83 | [0.83, ...], "candidates": [{"id": "d4", "text": "...", "score": 0.71}, ...]}

``query``, ``positive`` and ``positive_score`` are optional; an unknown score is written as ``null``
and read as NaN. A single ``.jsonl`` file is also accepted (checked against ``FILE.sha256`` when that
sidecar exists).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from conan_core.data.samples import example_id_of, normalize_text  # noqa: F401  (part of this module's API)
from conan_core.errors import ConanError
from conan_core.fsio import atomic_write_text, atomic_writer

POOL_FORMAT = "conan_core.candidate_pool"
POOL_VERSION = 1
MANIFEST = "manifest.json"


class PoolError(ConanError, ValueError):
    """A candidate pool (in memory or on disk) is malformed."""


@dataclass(frozen=True)
class Candidate:
    """One candidate negative: corpus ``id``, its ``text``, its ``score`` (cosine to the query, NaN
    when unknown) and its ``rank`` (1-based position in the example's ranked list)."""

    id: str
    text: str
    score: float
    rank: int


def _text_id(text: str) -> str:
    return "text:" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def _as_float(value: Any, where: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            return float(value)  # numpy / torch scalars
        except (TypeError, ValueError):
            raise PoolError(f"{where}: score must be a number or null (got {value!r})") from None
    return float(value)


def _candidate(item: Any, rank: int, where: str) -> Candidate:
    """Normalise one candidate given as Candidate, (id, text, score), mapping or bare text."""
    if isinstance(item, Candidate):
        return item if item.rank == rank else Candidate(item.id, item.text, item.score, rank)
    if isinstance(item, str):
        return Candidate(_text_id(item), item, math.nan, rank)
    if isinstance(item, Mapping):
        if not isinstance(item.get("text"), str):
            raise PoolError(f"{where}: a candidate mapping needs a 'text' string (got keys {sorted(item)})")
        cid = item.get("id")
        return Candidate(str(cid) if cid is not None else _text_id(item["text"]), item["text"],
                         _as_float(item.get("score"), where), rank)
    if isinstance(item, (tuple, list)) and len(item) == 3 and isinstance(item[1], str):
        return Candidate(str(item[0]), item[1], _as_float(item[2], where), rank)
    raise PoolError(f"{where}: a candidate must be a Candidate, an (id, text, score) tuple, a "
                    f"{{'id','text','score'}} mapping or a text (got {type(item).__name__}: {item!r:.80})")


def _texts(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise PoolError(f"{where}: positive must be a text or a list of texts (got {value!r:.80})")


def _scores(value: Any, where: str) -> tuple[float, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(_as_float(v, where) for v in value)
    return (_as_float(value, where),)


class CandidatePool(Mapping[str, list]):
    """``example_id -> list[Candidate]`` ranked best-first, plus per-example positives and query.

    ``candidates`` values may be lists of :class:`Candidate`, ``(id, text, score)`` tuples,
    ``{"id", "text", "score"}`` mappings or bare texts (id = hash of the text, score NaN), or a
    row-shaped mapping ``{"candidates": [...], "positive": ..., "positive_score": ..., "query": ...}``.
    List order is the ranking: ``rank`` is rewritten to the 1-based position. The returned lists
    are the pool's own: do not mutate them.
    """

    def __init__(self, candidates: Mapping[str, Any] | None = None, *,
                 positives: Mapping[str, str | Sequence[str]] | None = None,
                 positive_scores: Mapping[str, float | Sequence[float]] | None = None,
                 queries: Mapping[str, str] | None = None, meta: Mapping[str, Any] | None = None):
        self._candidates: dict[str, list[Candidate]] = {}
        self._positives: dict[str, tuple[str, ...]] = {}
        self._positive_scores: dict[str, tuple[float, ...]] = {}
        self._queries: dict[str, str] = {}
        self.meta: dict[str, Any] = dict(meta or {})
        for eid, value in (candidates or {}).items():
            eid = str(eid)
            where = f"pool[{eid!r}]"
            if isinstance(value, Mapping):
                self._set_extras(eid, value.get("positive"), value.get("positive_score"), value.get("query"), where)
                value = value.get("candidates", [])
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                raise PoolError(f"{where}: expected a list of candidates (got {type(value).__name__})")
            self._candidates[eid] = [_candidate(item, r, f"{where}[{r - 1}]") for r, item in enumerate(value, 1)]
        for eid, value in (positives or {}).items():
            self._positives[str(eid)] = _texts(value, f"positives[{eid!r}]")
        for eid, value in (positive_scores or {}).items():
            self._positive_scores[str(eid)] = _scores(value, f"positive_scores[{eid!r}]")
        for eid, value in (queries or {}).items():
            self._queries[str(eid)] = str(value)

    def _set_extras(self, eid: str, positive: Any, positive_score: Any, query: Any, where: str) -> None:
        # parse everything first so that a bad field leaves the pool unchanged
        texts = _texts(positive, where + ".positive") if positive is not None else None
        scores = _scores(positive_score, where + ".positive_score") if positive_score is not None else None
        if query is not None and not isinstance(query, str):
            raise PoolError(f"{where}.query: must be a text (got {query!r:.80})")
        if texts is not None:
            self._positives[eid] = texts
        if scores is not None:
            self._positive_scores[eid] = scores
        if query is not None:
            self._queries[eid] = query

    @classmethod
    def coerce(cls, pool: Any) -> "CandidatePool":
        """A CandidatePool from a CandidatePool (returned as is) or a plain mapping."""
        if isinstance(pool, CandidatePool):
            return pool
        if isinstance(pool, Mapping):
            return cls(pool)
        raise PoolError(f"a candidate pool must be a CandidatePool or a mapping example_id -> candidates "
                        f"(got {type(pool).__name__}); load one with CandidatePool.load(DIR)")

    # -- Mapping
    def __getitem__(self, example_id: str) -> list[Candidate]:
        return self._candidates[example_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._candidates)

    def __len__(self) -> int:
        return len(self._candidates)

    def __repr__(self) -> str:
        return f"CandidatePool({len(self)} examples, {self.num_candidates()} candidates)"

    # -- per-example extras
    def positive_texts(self, example_id: str) -> tuple[str, ...]:
        """The positive text(s) of an example (empty when unknown)."""
        return self._positives.get(example_id, ())

    def positive_scores(self, example_id: str) -> tuple[float, ...]:
        """The score(s) of the positive(s) against the query (empty when unknown)."""
        return self._positive_scores.get(example_id, ())

    def positive_score(self, example_id: str) -> float | None:
        """The lowest known positive score (None when unknown): the filters' reference, chosen as
        the weakest positive so that more near-positive candidates are dropped, not fewer."""
        scores = [s for s in self._positive_scores.get(example_id, ()) if not math.isnan(s)]
        return min(scores) if scores else None

    def query(self, example_id: str) -> str | None:
        return self._queries.get(example_id)

    def num_candidates(self) -> int:
        return sum(len(c) for c in self._candidates.values())

    # -- serialisation
    def row(self, example_id: str) -> dict[str, Any]:
        """The JSON row of one example (the on-disk format of the module docstring)."""
        row: dict[str, Any] = {"id": example_id}
        if example_id in self._queries:
            row["query"] = self._queries[example_id]
        pos = self._positives.get(example_id)
        if pos:
            row["positive"] = pos[0] if len(pos) == 1 else list(pos)
        ps = self._positive_scores.get(example_id)
        if ps:
            vals = [None if math.isnan(s) else s for s in ps]
            row["positive_score"] = vals[0] if len(vals) == 1 else vals
        row["candidates"] = [{"id": c.id, "text": c.text, "score": None if math.isnan(c.score) else c.score}
                             for c in self._candidates[example_id]]
        return row

    def save(self, path: str | os.PathLike, *, shard_size: int = 100_000) -> dict[str, Any]:
        """Write the pool. ``DIR`` -> ``DIR/candidates-NNNNN.jsonl`` shards + ``DIR/manifest.json``
        (returned); ``FILE.jsonl`` -> that file + ``FILE.jsonl.sha256``. The manifest is written
        last, so its presence means the set is complete."""
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1 (got {shard_size})")
        path = Path(path)
        ids = list(self._candidates)
        if path.suffix == ".jsonl":
            path.parent.mkdir(parents=True, exist_ok=True)
            digest = _write_jsonl(path, (self.row(e) for e in ids))
            atomic_write_text(Path(str(path) + ".sha256"), f"{digest}  {path.name}\n")
            return {"format": POOL_FORMAT, "version": POOL_VERSION, "num_examples": len(ids),
                    "shards": [{"name": path.name, "num_examples": len(ids), "sha256": digest}]}
        path.mkdir(parents=True, exist_ok=True)
        stale = path / MANIFEST
        if stale.exists():
            stale.unlink()  # an interrupted rewrite must not look complete
        shards = []
        for n, start in enumerate(range(0, max(len(ids), 1), shard_size)):
            chunk = ids[start:start + shard_size]
            name = f"candidates-{n:05d}.jsonl"
            digest = _write_jsonl(path / name, (self.row(e) for e in chunk))
            shards.append({"name": name, "num_examples": len(chunk), "sha256": digest})
        manifest = {"format": POOL_FORMAT, "version": POOL_VERSION, "num_examples": len(ids),
                    "num_candidates": self.num_candidates(), "shards": shards, "meta": self.meta}
        atomic_write_text(path / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        keep = {s["name"] for s in shards}
        for stale_shard in path.glob("candidates-*.jsonl"):  # shards of an earlier, larger pool
            if stale_shard.name not in keep:
                stale_shard.unlink()
        return manifest

    @classmethod
    def load(cls, path: str | os.PathLike, *, on_error: str = "raise") -> "CandidatePool":
        """Read a pool written by :meth:`save` (a directory with ``manifest.json`` or one ``.jsonl``
        file), checking sha256s. A malformed row raises :class:`PoolError` naming file and line, or
        with ``on_error="skip"`` is skipped and counted in ``pool.meta["skipped_rows"]``."""
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip' (got {on_error!r})")
        path = Path(path)
        if path.is_dir():
            mpath = path / MANIFEST
            if not mpath.exists():
                raise PoolError(f"{path}: no {MANIFEST}; a candidate pool directory is written by "
                                "CandidatePool.save(DIR) or `conan mine --out DIR`")
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
            if manifest.get("format") != POOL_FORMAT:
                raise PoolError(f"{mpath}: format is {manifest.get('format')!r}, expected {POOL_FORMAT!r}")
            files = [(path / s["name"], s["sha256"], s["num_examples"]) for s in manifest["shards"]]
            meta = dict(manifest.get("meta") or {})
        elif path.exists():
            side = Path(str(path) + ".sha256")
            expected = side.read_text(encoding="utf-8").split()[0] if side.exists() else None
            files, meta = [(path, expected, None)], {}
        else:
            raise PoolError(f"{path}: no such candidate pool (a directory with {MANIFEST} or a .jsonl file)")
        pool = cls(meta=meta)
        skipped = 0
        for file, expected, count in files:
            data = file.read_bytes()
            if expected is not None and hashlib.sha256(data).hexdigest() != expected:
                raise PoolError(f"{file}: sha256 mismatch (file changed or truncated after it was "
                                "written); re-run `conan mine` or restore the file")
            rows = 0
            for line_no, line in enumerate(data.decode("utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    pool._add_row(json.loads(line), f"{file}:{line_no}")
                    rows += 1
                except (PoolError, json.JSONDecodeError) as exc:
                    if on_error == "raise":
                        raise PoolError(f"{file}:{line_no}: {exc}") from None
                    skipped += 1
            if count is not None and on_error == "raise" and rows != count:
                raise PoolError(f"{file}: {rows} rows, manifest says {count}")
        if skipped:
            pool.meta["skipped_rows"] = skipped
        return pool

    def _add_row(self, row: Any, where: str) -> None:
        if not isinstance(row, Mapping) or not isinstance(row.get("id"), (str, int)):
            raise PoolError(f"{where}: a row must be an object with an 'id'")
        eid = str(row["id"])
        if eid in self._candidates:
            raise PoolError(f"{where}: duplicate example id {eid!r}")
        cands = row.get("candidates")
        if not isinstance(cands, list):
            raise PoolError(f"{where}: 'candidates' must be a list")
        parsed = [_candidate(item, r, f"{where} candidates[{r - 1}]") for r, item in enumerate(cands, 1)]
        self._set_extras(eid, row.get("positive"), row.get("positive_score"), row.get("query"), where)
        self._candidates[eid] = parsed

    @classmethod
    def toy(cls, num_examples: int = 8, num_candidates: int = 48, *, seed: int = 0) -> "CandidatePool":
        """A small synthetic pool (scores descending from 0.85 towards 0.05, positive score 1.0),
        for demos and conformance checks."""
        rng = random.Random(seed)
        cands, pos, pscore = {}, {}, {}
        for i in range(num_examples):
            eid = f"ex{i}"
            scores = sorted((rng.uniform(0.05, 0.85) for _ in range(num_candidates)), reverse=True)
            cands[eid] = [Candidate(f"doc{i}-{j}", f"document {j} for example {i}", s, j + 1)
                          for j, s in enumerate(scores)]
            pos[eid], pscore[eid] = f"positive of example {i}", 1.0
        return cls(cands, positives=pos, positive_scores=pscore)


def _write_jsonl(path: Path, rows: Iterator[dict]) -> str:
    """Write rows atomically (temp file + rename); return the file's sha256."""
    h = hashlib.sha256()
    with atomic_writer(path) as fh:
        for row in rows:
            line = (json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
            h.update(line)
            fh.write(line)
    return h.hexdigest()
