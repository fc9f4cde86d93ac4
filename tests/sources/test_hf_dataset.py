"""``hf_dataset``: local ``datasets`` data (save_to_disk, parquet, JSON lines, CSV) with column
detection, exact resume (0 and 2 DataLoader workers), a partition across ranks and bad rows named."""

from __future__ import annotations

import itertools
import json

import pytest

from conan_core.data.loader import Map, ResumableLoader
from conan_core.data.samples import DataError
from conan_core.registries import REGISTRIES

datasets = pytest.importorskip("datasets")


def build(**fields):
    runtime = {k: fields.pop(k) for k in ("rank", "world_size", "seed") if k in fields}
    return REGISTRIES["sources"].build({"type": "hf_dataset", **fields}, **runtime)


def take(iterable, n):
    return list(itertools.islice(iterable, n))


def one_epoch(**fields):
    return list(build(loop=False, shuffle_buffer=0, shuffle_shards=False, **fields))


def save(rows, path):
    datasets.disable_progress_bars()
    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


def flag_rows(n):
    """FlagEmbedding's layout: query, pos list, neg list."""
    return [{"query": f"query {i}", "pos": [f"passage {i}", f"second {i}"], "neg": [f"neg {i}a", f"neg {i}b"]}
            for i in range(n)]


@pytest.fixture
def flag(tmp_path):
    return save(flag_rows(40), tmp_path / "flag")


def test_flagembedding_layout_from_save_to_disk(flag):
    samples = one_epoch(path=str(flag), kind="pairs", task="retrieval", lang="en")
    assert len(samples) == 40
    first = samples[0]
    assert (first["query"], first["pos"], first["neg"]) == ("query 0", "passage 0", ["neg 0a", "neg 0b"])
    assert (first["task"], first["lang"], first["__key__"], first["__url__"]) == ("retrieval", "en", "row-0", str(flag))


def test_sentence_transformers_layouts_and_numbered_negatives(tmp_path):
    st = save([{"anchor": f"a{i}", "positive": f"p{i}", "negative": f"n{i}"} for i in range(5)], tmp_path / "st")
    assert [(s["query"], s["pos"], s["neg"]) for s in one_epoch(path=str(st), kind="pairs")][:2] == \
        [("a0", "p0", ["n0"]), ("a1", "p1", ["n1"])]
    numbered = save([{"anchor": f"a{i}", "positive": f"p{i}", "negative_2": f"y{i}", "negative_1": f"x{i}"}
                     for i in range(3)], tmp_path / "num")
    assert one_epoch(path=str(numbered), kind="pairs")[0]["neg"] == ["x0", "y0"]


def test_sts_csv_text_parquet_and_jsonl_files(tmp_path):
    csv = tmp_path / "sts.csv"
    csv.write_text("sentence1,sentence2,score\nA cat sits.,A cat is sitting.,4.8\nA dog runs.,It rains.,0.2\n")
    sts = one_epoch(path=str(csv), kind="sts", cache_dir=str(tmp_path / "cache"))
    assert [(s["s1"], s["s2"], s["score"]) for s in sts] == [("A cat sits.", "A cat is sitting.", 4.8),
                                                               ("A dog runs.", "It rains.", 0.2)]
    assert sts[0]["__url__"] == str(csv) and sts[1]["__key__"] == "row-1"
    datasets.Dataset.from_list([{"content": f"text {i}"} for i in range(7)]).to_parquet(str(tmp_path / "t.parquet"))
    jsonl = tmp_path / "more.jsonl"
    jsonl.write_text("".join(json.dumps({"text": f"json {i}"}) + "\n" for i in range(3)))
    texts = one_epoch(path=[str(tmp_path / "t.parquet"), str(jsonl)], cache_dir=str(tmp_path / "cache"))
    assert [s["text"] for s in texts] == [f"text {i}" for i in range(7)] + [f"json {i}" for i in range(3)]


def test_dataset_dict_split_and_column_mapping(tmp_path):
    rows = [{"question": f"q{i}", "answer": f"a{i}", "hard": [f"h{i}"], "topic": "faq", "id": 100 + i, "label": i % 2}
            for i in range(4)]
    datasets.disable_progress_bars()
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows),
                          "test": datasets.Dataset.from_list(rows[:1])}).save_to_disk(str(tmp_path / "dd"))
    fields = {"path": str(tmp_path / "dd"), "kind": "pairs", "columns": {"neg": "hard", "task": "topic"}}
    train = one_epoch(**fields)
    assert [(s["query"], s["pos"], s["neg"], s["task"]) for s in train][:1] == [("q0", "a0", ["h0"], "faq")]
    assert (train[1]["id"], train[1]["label"]) == ("101", "1")  # integer ids and labels become text
    assert train[0]["__url__"] == f"{tmp_path / 'dd'}[train]"
    assert len(one_epoch(**fields, dataset_split="test")) == 1
    with pytest.raises(DataError, match=r"without split 'dev'; its splits: train, test; set dataset_split"):
        one_epoch(**fields, dataset_split="dev")


def test_missing_columns_are_named_with_a_fix(tmp_path):
    path = save([{"sentence1": "a", "sentence2": "b", "score": 1.0}], tmp_path / "sts")
    with pytest.raises(DataError) as err:
        one_epoch(path=str(path), kind="text")
    text = str(err.value)
    assert "no column for the text field(s) ['text']" in text and "'sentence1'" in text
    assert "set kind: sts" in text and "columns: {text: COLUMN}" in text
    with pytest.raises(DataError, match=r"columns.query names \['title'\]"):
        one_epoch(path=str(path), kind="pairs", columns={"query": "title"})
    with pytest.raises(Exception, match="unknown sample field"):
        build(path=str(path), columns={"question": "x"})


def test_bad_rows_are_skipped_and_counted_or_named(tmp_path):
    rows = flag_rows(6)
    rows[2]["query"] = None
    rows[4]["pos"] = []
    path = save(rows, tmp_path / "bad")
    source = build(path=str(path), kind="pairs", loop=False, shuffle_buffer=0)
    assert len(list(source)) == 4
    counters = source.counters()
    assert counters["bad_text"] == 1 and counters["missing_key"] == 1 and counters["samples"] == 4
    assert any("row-2" in p and "'query'" in p for p in source.problems())
    with pytest.raises(DataError, match=rf"{path}: sample 'row-2': field 'query' is NoneType"):
        list(build(path=str(path), kind="pairs", loop=False, shuffle_buffer=0, shuffle_shards=False,
                   on_bad_sample="raise"))


def url_key(sample):
    return (sample["__url__"], sample["__key__"])


@pytest.mark.parametrize("k", [1, 17, 40, 41, 95])
def test_resume_is_exact_at_any_point(flag, k):
    def make():
        return build(path=str(flag), kind="pairs", rows_per_unit=6, shuffle_buffer=5, seed=3)

    total = 120
    ref = [url_key(s) for s in take(iter(make()), total)]
    assert len(set(ref[:40])) == 40  # an epoch is every row once
    first = make()
    head = [url_key(s) for s in take(iter(first), k)]
    state = json.loads(json.dumps(first.state_dict()))
    second = make()
    second.load_state_dict(state)
    assert head + [url_key(s) for s in take(iter(second), total - k)] == ref


def tag(sample):
    return (sample["__key__"], sample["query"])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_resume_with_workers_is_exact(flag, num_workers):
    def make():
        source = build(path=str(flag), kind="pairs", rows_per_unit=5, shuffle_buffer=4, seed=1)
        return ResumableLoader(Map(source, tag), num_workers=num_workers, snapshot_every=4, seed=2)

    total = 70
    ref = take(make(), total)
    assert len({r[0] for r in ref[:40]}) == 40
    loader = make()
    head = take(loader, 23)
    resumed = make()
    resumed.load_state_dict(json.loads(json.dumps(loader.state_dict())))
    assert head + take(resumed, total - 23) == ref


def test_ranks_partition_the_rows(flag):
    keys = [{s["__key__"] for s in one_epoch(path=str(flag), kind="pairs", rows_per_unit=7, rank=r, world_size=2)}
            for r in (0, 1)]
    assert not keys[0] & keys[1] and len(keys[0] | keys[1]) == 40


def test_changed_data_refuses_resume(tmp_path):
    path = save(flag_rows(10), tmp_path / "d")
    source = build(path=str(path), kind="pairs")
    take(iter(source), 3)
    state = source.state_dict()
    other = build(path=str(path), kind="pairs", columns={"query": "query", "pos": "neg"})
    with pytest.raises(DataError, match="cannot resume: the data or world differs"):
        other.load_state_dict(state)
