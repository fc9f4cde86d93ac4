"""Loading the evaluation JSONL formats (written by the demo builder, or by hand).

Layout under an eval root (``<data root>/eval``)::

    retrieval/queries.jsonl       {"id", "text", "lang"?}
    retrieval/corpus.jsonl        {"id", "text"}
    retrieval/qrels.jsonl         {"qid", "doc_id", "score"}
    cross_lingual/                the same three files ("lang" names the query language)
    sts.jsonl                     {"s1", "s2", "score"}
    classification.jsonl          {"text", "label"}

Ids may be strings or integers (kept as strings). A bad line (invalid JSON, a missing or
mistyped field, a duplicate id, a qrel naming an unknown query or document) raises
:class:`EvalDataError` naming the file and the 1-based line number. Blank lines are skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from conan_core.errors import DataError


class EvalDataError(DataError):
    """An evaluation file is missing or has a bad line (the message names file and line)."""


class MissingEvalDataError(EvalDataError, FileNotFoundError):
    """The files of a task are absent (as opposed to present but malformed)."""


@dataclass
class RetrievalData:
    """Queries, corpus and graded qrels of one retrieval set.

    ``qrels[qid][doc_id] = score`` (relevant when > 0); ``query_langs`` parallel to
    ``query_ids`` ("" when the file gives none).
    """

    query_ids: list[str]
    query_texts: list[str]
    query_langs: list[str]
    doc_ids: list[str]
    doc_texts: list[str]
    qrels: dict[str, dict[str, float]]
    source: str = ""

    def __len__(self) -> int:
        return len(self.query_ids)


@dataclass
class STSData:
    """Sentence pairs and gold similarity scores (any real scale)."""

    s1: list[str]
    s2: list[str]
    scores: list[float]
    source: str = ""

    def __len__(self) -> int:
        return len(self.scores)


@dataclass
class ClassificationData:
    """Texts and their gold labels; ``label_names`` are the distinct labels, sorted."""

    texts: list[str]
    labels: list[str]
    label_names: list[str] = field(default_factory=list)
    source: str = ""

    def __post_init__(self) -> None:
        if not self.label_names:
            self.label_names = sorted(set(self.labels))

    def __len__(self) -> int:
        return len(self.texts)


# ----------------------------------------------------------------------------- reading

def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; bad JSON or a non-object raises with file:line."""
    path = Path(path)
    if not path.is_file():
        raise MissingEvalDataError(f"{path}: evaluation file not found")
    from conan_core.jsonl import iter_jsonl as _lines

    for lineno, obj in _lines(path, error=EvalDataError):
        if not isinstance(obj, dict):
            raise EvalDataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def _field(obj: dict, name: str, kind: str, where: str, *, optional: bool = False) -> Any:
    """One field of a line, checked: kind is "id" (str or int), "text" (str) or "number"."""
    if name not in obj:
        if optional:
            return None
        raise EvalDataError(f"{where}: missing field {name!r} (fields present: {sorted(obj)})")
    value = obj[name]
    if kind == "id":
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise EvalDataError(f"{where}: field {name!r} must be a string or integer id, got {value!r}")
        return str(value)
    if kind == "text":
        if not isinstance(value, str):
            raise EvalDataError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise EvalDataError(f"{where}: field {name!r} must be a finite number, got {value!r}")
    return float(value)


def _find(path: Path, task: str, names: tuple[str, ...]) -> Path:
    """The directory (or file) of ``task`` given the task path itself, an eval root or a data root."""
    candidates = [path, path / task, path / "eval" / task]
    for cand in candidates:
        if all((cand / n).is_file() for n in names):
            return cand
    wanted = ", ".join(names)
    tried = ", ".join(str(c) for c in candidates)
    raise MissingEvalDataError(f"no {task} evaluation data ({wanted}) under {path}; tried {tried}")


def load_retrieval(path: str | Path, task: str = "retrieval") -> RetrievalData:
    """Load ``queries.jsonl``, ``corpus.jsonl``, ``qrels.jsonl`` from ``path`` (the task directory,
    an eval root holding ``<task>/``, or a data root holding ``eval/<task>/``)."""
    root = _find(Path(path), task, ("queries.jsonl", "corpus.jsonl", "qrels.jsonl"))
    q_ids, q_texts, q_langs, seen_q = [], [], [], {}
    qfile = root / "queries.jsonl"
    for lineno, obj in iter_jsonl(qfile):
        where = f"{qfile}:{lineno}"
        qid = _field(obj, "id", "id", where)
        if qid in seen_q:
            raise EvalDataError(f"{where}: duplicate query id {qid!r} (first on line {seen_q[qid]})")
        seen_q[qid] = lineno
        q_ids.append(qid)
        q_texts.append(_field(obj, "text", "text", where))
        lang = _field(obj, "lang", "text", where, optional=True)
        q_langs.append(lang or "")
    d_ids, d_texts, seen_d = [], [], {}
    cfile = root / "corpus.jsonl"
    for lineno, obj in iter_jsonl(cfile):
        where = f"{cfile}:{lineno}"
        did = _field(obj, "id", "id", where)
        if did in seen_d:
            raise EvalDataError(f"{where}: duplicate document id {did!r} (first on line {seen_d[did]})")
        seen_d[did] = lineno
        d_ids.append(did)
        d_texts.append(_field(obj, "text", "text", where))
    qrels: dict[str, dict[str, float]] = {}
    rfile = root / "qrels.jsonl"
    for lineno, obj in iter_jsonl(rfile):
        where = f"{rfile}:{lineno}"
        qid = _field(obj, "qid", "id", where)
        did = _field(obj, "doc_id", "id", where)
        score = _field(obj, "score", "number", where)
        if qid not in seen_q:
            raise EvalDataError(f"{where}: qrel names query {qid!r}, which is not in {qfile.name}")
        if did not in seen_d:
            raise EvalDataError(f"{where}: qrel names document {did!r}, which is not in {cfile.name}")
        qrels.setdefault(qid, {})[did] = score
    if not q_ids or not d_ids:
        raise EvalDataError(f"{root}: {task} data needs at least one query and one document "
                            f"(got {len(q_ids)} queries, {len(d_ids)} documents)")
    return RetrievalData(q_ids, q_texts, q_langs, d_ids, d_texts, qrels, str(root))


def load_sts(path: str | Path) -> STSData:
    """Load ``sts.jsonl`` (the file, or an eval / data root holding it)."""
    file = _find_file(Path(path), "sts.jsonl")
    s1, s2, scores = [], [], []
    for lineno, obj in iter_jsonl(file):
        where = f"{file}:{lineno}"
        s1.append(_field(obj, "s1", "text", where))
        s2.append(_field(obj, "s2", "text", where))
        scores.append(_field(obj, "score", "number", where))
    if len(scores) < 2:
        raise EvalDataError(f"{file}: STS needs at least 2 pairs for a correlation (got {len(scores)})")
    return STSData(s1, s2, scores, str(file))


def load_classification(path: str | Path) -> ClassificationData:
    """Load ``classification.jsonl`` (the file, or an eval / data root holding it)."""
    file = _find_file(Path(path), "classification.jsonl")
    texts, labels = [], []
    for lineno, obj in iter_jsonl(file):
        where = f"{file}:{lineno}"
        texts.append(_field(obj, "text", "text", where))
        # integer class ids are accepted and become their decimal string
        labels.append(_field(obj, "label", "id", where))
    if not texts:
        raise EvalDataError(f"{file}: no examples")
    return ClassificationData(texts, labels, source=str(file))


def _find_file(path: Path, name: str) -> Path:
    for cand in (path, path / name, path / "eval" / name):
        if cand.is_file():
            return cand
    raise MissingEvalDataError(f"no {name} under {path}; tried {path}, {path / name}, {path / 'eval' / name}")
