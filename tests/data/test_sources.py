"""The four registered sources: building, reading, epochs, shuffling, filters, state checks."""

from __future__ import annotations

import json

import pytest

from conan_core.data.samples import DataError
from conan_core.data.shards import write_shards
from conan_core.registries import REGISTRIES
from conan_core.sources.base import Source

SOURCES = REGISTRIES["sources"]


def texts(directory, n, shard_size):
    write_shards(({"text": f"t{i}"} for i in range(n)), directory, kind="text", shard_size=shard_size)
    return str(directory)


@pytest.mark.parametrize("key", ["text_shards", "pair_shards", "sts_shards", "jsonl"])
def test_every_key_builds_lazily_and_needs_only_a_path(key):
    src = SOURCES.build({"type": key, "path": "not/read/until/iteration"})
    assert isinstance(src, Source)
    assert src.counters()["samples"] == 0
    conf = SOURCES.config_class(key)(path="x")
    assert (conf.shuffle_buffer, conf.max_chars, conf.on_bad_sample, conf.loop) == (1000, 20000, "skip", True)
    with pytest.raises(Exception, match="path"):
        SOURCES.build({"type": key})


def test_missing_directory_fails_on_first_read_with_a_clear_message(tmp_path):
    src = SOURCES.build({"type": "text_shards", "path": str(tmp_path / "nope")})
    with pytest.raises(DataError, match="no manifest.json in .*nope"):
        next(iter(src))


def test_kind_mismatch_names_the_right_source(tmp_path):
    write_shards([{"s1": "a", "s2": "b", "score": 1.0}], tmp_path, kind="sts")
    with pytest.raises(DataError, match="shards of kind 'sts'.*use the sts_shards source"):
        next(iter(SOURCES.build({"type": "text_shards", "path": str(tmp_path)})))


def test_rank_outside_world_is_rejected():
    with pytest.raises(DataError, match="rank=2, world_size=2"):
        SOURCES.build({"type": "text_shards", "path": "x"}, rank=2, world_size=2)


def test_several_directories_read_as_one_set(tmp_path):
    a, b = texts(tmp_path / "a", 5, 2), texts(tmp_path / "b", 4, 3)
    src = SOURCES.build({"type": "text_shards", "path": [a, b], "loop": False, "shuffle_buffer": 0,
                         "shuffle_shards": False})
    got = [(g["__url__"].split("/")[-2], g["text"]) for g in src]
    assert got == [("a", f"t{i}") for i in range(5)] + [("b", f"t{i}") for i in range(4)]


def test_loop_counts_epochs_and_each_epoch_is_a_full_pass(tmp_path):
    src = SOURCES.build({"type": "text_shards", "path": texts(tmp_path, 10, 3), "shuffle_buffer": 4}, seed=3)
    it = iter(src)
    epochs = [[next(it)["text"] for _ in range(10)] for _ in range(3)]
    assert all(sorted(e) == sorted(f"t{i}" for i in range(10)) for e in epochs)
    assert epochs[0] != epochs[1]  # reshuffled each epoch
    assert src.epoch == 2  # the third epoch's last sample was yielded before its end was seen
    next(it)
    assert src.epoch == 3


def test_loop_false_reads_one_epoch_per_iter_and_epochs_caps_the_total(tmp_path):
    path = texts(tmp_path, 6, 2)
    once = SOURCES.build({"type": "text_shards", "path": path, "loop": False})
    assert len(list(once)) == 6 and once.epoch == 1
    assert len(list(once)) == 6 and once.epoch == 2
    capped = SOURCES.build({"type": "text_shards", "path": path, "epochs": 2})
    assert len(list(capped)) == 12 and list(capped) == []


def test_shuffle_is_seeded(tmp_path):
    path = texts(tmp_path, 40, 5)

    def order(seed):
        return [g["text"] for g in SOURCES.build({"type": "text_shards", "path": path, "loop": False,
                                                  "shuffle_buffer": 10}, seed=seed)]
    assert order(1) == order(1)
    assert order(1) != order(2)
    assert sorted(order(1)) == sorted(f"t{i}" for i in range(40))
    plain = [g["text"] for g in SOURCES.build({"type": "text_shards", "path": path, "loop": False,
                                               "shuffle_buffer": 0, "shuffle_shards": False})]
    assert plain == [f"t{i}" for i in range(40)]


def test_pairs_task_filter(tmp_path):
    samples = [{"query": f"q{i}", "pos": "p", "task": ["retrieval", "clr", "cls"][i % 3]} for i in range(9)]
    write_shards(samples, tmp_path, kind="pairs", shard_size=4)
    src = SOURCES.build({"type": "pair_shards", "path": str(tmp_path), "tasks": ["clr", "cls"], "loop": False})
    got = list(src)
    assert sorted(g["task"] for g in got) == ["clr"] * 3 + ["cls"] * 3
    assert src.counters()["filtered"] == 3


def test_jsonl_source_reads_pairs_with_keys_and_resumes(tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [{"query": f"q{i}", "pos": f"p{i}", "neg": [f"n{i}"], "task": "t", "lang": "en"} for i in range(9)]
    path.write_text("\n".join(json.dumps(r) for r in rows[:4]) + "\n\n" +
                    "\n".join(json.dumps(r) for r in rows[4:]) + "\n", encoding="utf-8")
    spec = {"type": "jsonl", "path": str(path), "kind": "pairs", "loop": False, "shuffle_buffer": 3}
    full = list(SOURCES.build(spec, seed=5))
    assert sorted(g["query"] for g in full) == sorted(r["query"] for r in rows)
    assert {g["__key__"] for g in full} == {f"L{i}" for i in (1, 2, 3, 4, 6, 7, 8, 9, 10)}
    assert all(g["__url__"] == str(path) for g in full)
    first = SOURCES.build(spec, seed=5)
    it = iter(first)
    head = [next(it) for _ in range(4)]
    state = json.loads(json.dumps(first.state_dict()))
    second = SOURCES.build(spec, seed=5)
    second.load_state_dict(state)
    assert head + list(second) == full


def test_resume_refuses_a_different_world_or_data_naming_the_field(tmp_path):
    path = texts(tmp_path / "a", 12, 3)
    src = SOURCES.build({"type": "text_shards", "path": path}, world_size=2)
    it = iter(src)
    next(it)
    state = src.state_dict()
    with pytest.raises(DataError, match=r"world_size: checkpoint 2, now 1"):
        SOURCES.build({"type": "text_shards", "path": path}).load_state_dict(state)
    with pytest.raises(DataError, match=r"seed: checkpoint 0, now 4"):
        SOURCES.build({"type": "text_shards", "path": path}, world_size=2, seed=4).load_state_dict(state)
    other = texts(tmp_path / "b", 13, 3)
    with pytest.raises(DataError, match=r"fingerprint: checkpoint '[0-9a-f]+', now '[0-9a-f]+'"):
        SOURCES.build({"type": "text_shards", "path": other}, world_size=2).load_state_dict(state)
    relaxed = SOURCES.build({"type": "text_shards", "path": other, "allow_data_change": True})
    relaxed.load_state_dict(state)  # warns and restarts the saved epoch with the new data
    it = iter(relaxed)
    assert sorted(next(it)["text"] for _ in range(13)) == sorted(f"t{i}" for i in range(13))
    assert relaxed.counters()["samples"] == 14  # counters continue from the checkpoint


def test_an_epoch_without_samples_raises_instead_of_spinning(tars, tmp_path):
    tars.hand_made_set(tmp_path, "text", [[("a.json", b'{"text": ""}')]], ("json",))
    with pytest.raises(DataError, match="epoch 0 gave no samples.*empty_text"):
        next(iter(SOURCES.build({"type": "text_shards", "path": str(tmp_path)})))
    assert list(SOURCES.build({"type": "text_shards", "path": str(tmp_path), "loop": False})) == []
