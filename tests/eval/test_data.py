"""Loading the eval JSONL formats: happy paths, path resolution, and bad lines named by file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conan_core.eval.data import (
    EvalDataError,
    MissingEvalDataError,
    load_classification,
    load_retrieval,
    load_sts,
)


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def retrieval_dir(root: Path, task: str = "retrieval") -> Path:
    d = root / "eval" / task
    write_jsonl(d / "queries.jsonl", [{"id": "q1", "text": "cats", "lang": "en"}, {"id": 2, "text": "chats"}])
    write_jsonl(d / "corpus.jsonl", [{"id": "d1", "text": "a cat"}, "", {"id": "d2", "text": "a dog"}])
    write_jsonl(d / "qrels.jsonl", [{"qid": "q1", "doc_id": "d1", "score": 2}, {"qid": 2, "doc_id": "d1", "score": 1},
                                    {"qid": "q1", "doc_id": "d2", "score": 0}])
    return d


def test_retrieval_loads_from_task_eval_and_data_roots(tmp_path):
    d = retrieval_dir(tmp_path)
    for path in (d, tmp_path / "eval", tmp_path):
        data = load_retrieval(path)
        assert data.query_ids == ["q1", "2"] and data.query_langs == ["en", ""]
        assert data.doc_ids == ["d1", "d2"] and data.doc_texts == ["a cat", "a dog"]
        assert data.qrels == {"q1": {"d1": 2.0, "d2": 0.0}, "2": {"d1": 1.0}}
    assert load_retrieval(tmp_path, "retrieval").source == str(d)


def test_retrieval_missing_is_a_missing_error(tmp_path):
    with pytest.raises(MissingEvalDataError, match="no cross_lingual evaluation data"):
        load_retrieval(tmp_path, "cross_lingual")


@pytest.mark.parametrize("file,line,content,message", [
    ("queries.jsonl", 2, "{not json", "invalid JSON"),
    ("queries.jsonl", 2, {"id": "q9"}, "missing field 'text'"),
    ("queries.jsonl", 2, {"id": "q1", "text": "again"}, "duplicate query id 'q1'"),
    ("queries.jsonl", 2, {"id": 1.5, "text": "x"}, "string or integer id"),
    ("queries.jsonl", 2, [1, 2], "expected a JSON object"),
    ("corpus.jsonl", 2, {"id": "d1", "text": "dup"}, "duplicate document id 'd1'"),
    ("corpus.jsonl", 2, {"id": "d3", "text": 7}, "must be a string"),
    ("qrels.jsonl", 2, {"qid": "nope", "doc_id": "d1", "score": 1}, "names query 'nope'"),
    ("qrels.jsonl", 2, {"qid": "q1", "doc_id": "nope", "score": 1}, "names document 'nope'"),
    ("qrels.jsonl", 2, {"qid": "q1", "doc_id": "d1", "score": "high"}, "finite number"),
    ("qrels.jsonl", 2, {"qid": "q1", "doc_id": "d1", "score": float("nan")}, "finite number"),
])
def test_bad_lines_name_file_and_line(tmp_path, file, line, content, message):
    d = tmp_path / "retrieval"
    good = {"queries.jsonl": [{"id": "q1", "text": "x"}], "corpus.jsonl": [{"id": "d1", "text": "y"}],
            "qrels.jsonl": [{"qid": "q1", "doc_id": "d1", "score": 1}]}
    for name, rows in good.items():
        write_jsonl(d / name, rows + ([content] if name == file else []))
    with pytest.raises(EvalDataError) as info:
        load_retrieval(d)
    assert f"{d / file}:{line}:" in str(info.value) and message in str(info.value)


def test_sts_and_classification(tmp_path):
    write_jsonl(tmp_path / "eval" / "sts.jsonl", [{"s1": "a", "s2": "b", "score": 1}, {"s1": "c", "s2": "d", "score": 4.5}])
    sts = load_sts(tmp_path)
    assert sts.s1 == ["a", "c"] and sts.scores == [1.0, 4.5] and len(sts) == 2
    write_jsonl(tmp_path / "eval" / "classification.jsonl",
                [{"text": "t1", "label": "sports"}, {"text": "t2", "label": 3}, {"text": "t3", "label": "art"}])
    cls = load_classification(tmp_path / "eval")
    assert cls.labels == ["sports", "3", "art"] and cls.label_names == ["3", "art", "sports"]


def test_sts_and_classification_errors(tmp_path):
    bad = write_jsonl(tmp_path / "sts.jsonl", [{"s1": "a", "s2": "b", "score": 1}, {"s1": "a", "score": 2}])
    with pytest.raises(EvalDataError, match=rf"{bad}:2: missing field 's2'"):
        load_sts(bad)
    one = write_jsonl(tmp_path / "one" / "sts.jsonl", [{"s1": "a", "s2": "b", "score": 1}])
    with pytest.raises(EvalDataError, match="at least 2 pairs"):
        load_sts(one)
    cls = write_jsonl(tmp_path / "classification.jsonl", [{"text": "a", "label": None}])
    with pytest.raises(EvalDataError, match=rf"{cls}:1: field 'label'"):
        load_classification(cls)
    with pytest.raises(MissingEvalDataError):
        load_sts(tmp_path / "nowhere")
