"""Every kind of bad data gives its documented outcome and counter (RELIABILITY rows 9-13)."""

from __future__ import annotations

import json
import logging

import pytest

from conan_core.data.samples import DataError, validate_sample
from conan_core.data.shards import iter_tar_groups, write_shards
from conan_core.registries import REGISTRIES


KEYS = {"text": "text_shards", "pairs": "pair_shards", "sts": "sts_shards"}


def source(directory, kind="text", **fields):
    spec = {"type": KEYS[kind], "path": str(directory), "shuffle_buffer": 0, "shuffle_shards": False,
            "loop": False, **fields}
    return REGISTRIES["sources"].build(spec)


def jbytes(obj) -> bytes:
    return json.dumps(obj).encode()


def json_set(tars, tmp_path, kind, objects: list, raw: dict[int, bytes] | None = None):
    """One shard of .json members; ``raw`` replaces the payload of some members by raw bytes."""
    raw = raw or {}
    members = [(f"k{i}.json", raw.get(i, jbytes(o) if o is not None else b"")) for i, o in enumerate(objects)]
    tars.hand_made_set(tmp_path / "set", kind, [members], ("json",))
    return tmp_path / "set"


GOOD = {"text": "fine text"}


@pytest.mark.parametrize("name,payload,reason", [
    ("invalid utf-8 in .json", b'{"text": "a\xff\xfeb"}', "bad_text"),
    ("lone surrogate", b'{"text": "a\\ud800b"}', "bad_text"),
    ("NUL byte", b'{"text": "a\\u0000b"}', "bad_text"),
    ("None field", b'{"text": null}', "bad_text"),
    ("non-string field", b'{"text": 12}', "bad_text"),
    ("empty text", b'{"text": ""}', "empty_text"),
    ("whitespace-only text", b'{"text": " \\n\\t "}', "empty_text"),
    ("missing key", b'{"body": "x"}', "missing_key"),
    ("not json", b'{"text": ', "bad_json"),
    ("raw control char in json", b'{"text": "a\x00b"}', "bad_json"),
    ("json array", b'["text"]', "bad_json"),
])
def test_bad_text_samples_skip_and_count_or_raise_naming_shard_and_key(tars, tmp_path, name, payload, reason):
    directory = json_set(tars, tmp_path, "text", [GOOD, None, GOOD], raw={1: payload})
    src = source(directory)
    got = list(src)
    assert [g["__key__"] for g in got] == ["k0", "k2"], name
    counters = src.counters()
    assert counters[reason] == 1 and counters["samples"] == 2, (name, counters)
    assert sum(counters[r] for r in ("bad_text", "bad_json", "empty_text", "missing_key")) == 1
    assert any("k1" in p and "shard-00000.tar" in p for p in src.problems())
    with pytest.raises(DataError) as exc:
        list(source(directory, on_bad_sample="raise"))
    assert exc.value.reason == reason and exc.value.key == "k1"
    assert "shard-00000.tar" in str(exc.value) and "'k1'" in str(exc.value)


def test_invalid_utf8_in_txt_member_and_repair_mode(tars, tmp_path):
    members = [("a.txt", b"good"), ("b.txt", b"bad \xff\xfe bytes"), ("c.txt", b"x\xed\xa0\x80y")]
    tars.hand_made_set(tmp_path / "set", "text", [members], ("txt",))
    src = source(tmp_path / "set")
    assert [g["text"] for g in src] == ["good"]
    assert src.counters()["bad_text"] == 2
    fixed = source(tmp_path / "set", repair_text=True)
    texts = [g["text"] for g in fixed]
    assert texts[0] == "good" and "\ufffd" in texts[1] and "\ufffd" in texts[2]
    assert fixed.counters()["repaired_text"] == 2 and fixed.counters()["bad_text"] == 0
    assert all(t.encode("utf-8") for t in texts)


def test_repair_mode_replaces_lone_surrogates_and_drops_nul(tars, tmp_path):
    directory = json_set(tars, tmp_path, "text", [{"text": "a\ud800b"}, {"text": "c\x00d"}])
    src = source(directory, repair_text=True)
    assert [g["text"] for g in src] == ["a\ufffdb", "cd"]
    assert src.counters()["repaired_text"] == 2


@pytest.mark.parametrize("obj,reason", [
    ({"query": "", "pos": "p"}, "empty_text"),
    ({"query": "q", "pos": "   "}, "empty_text"),
    ({"query": "q", "pos": "p", "neg": ["n", ""]}, "empty_text"),
    ({"query": "q", "pos": "p", "neg": "n"}, "bad_text"),
    ({"query": "q", "pos": "p", "neg": [None]}, "bad_text"),
    ({"query": None, "pos": "p"}, "bad_text"),
    ({"query": "q", "pos": "p", "task": 3}, "bad_text"),
    ({"query": "q"}, "missing_key"),
])
def test_bad_pairs(tars, tmp_path, obj, reason):
    good = {"query": "q", "pos": "p", "neg": ["n"], "task": "t", "lang": "en"}
    src = source(json_set(tars, tmp_path, "pairs", [good, obj]), "pairs")
    assert [g["__key__"] for g in src] == ["k0"]
    assert src.counters()[reason] == 1


@pytest.mark.parametrize("score", [float("nan"), "0.5", True, None, float("inf")])
def test_bad_sts_score(tars, tmp_path, score):
    payload = json.dumps({"s1": "a", "s2": "b", "score": score}).encode()
    src = source(json_set(tars, tmp_path, "sts", [{"s1": "a", "s2": "b", "score": 1}, None], raw={1: payload}), "sts")
    assert [g["score"] for g in src] == [1.0]
    assert src.counters()["bad_score"] == 1


def test_pathological_lengths_are_truncated_and_counted(tars, tmp_path):
    long_word = "x" * (1 << 20)
    emoji = "\U0001F600" * 100_000
    directory = json_set(tars, tmp_path, "text", [{"text": long_word}, {"text": emoji}, {"text": "short"}])
    src = source(directory, max_chars=1000)
    got = [g["text"] for g in src]
    assert got == ["x" * 1000, "\U0001F600" * 1000, "short"]
    assert src.counters()["too_long"] == 2 and src.counters()["samples"] == 3
    strict = source(directory, max_chars=1000, on_bad_sample="raise")  # truncation is no error
    assert [len(g["text"]) for g in strict] == [1000, 1000, 5]


def test_validate_sample_truncates_every_text_field():
    out, events = validate_sample({"query": "q" * 50, "pos": "p", "neg": ["n" * 50], "instruction": ""},
                                  "pairs", max_chars=10)
    assert out["query"] == "q" * 10 and out["neg"] == ["n" * 10] and events == ["too_long"]


def test_partial_sample_is_skipped_and_named(tars, tmp_path, caplog):
    members = [("a.txt", b"one"), ("a.json", b"{}"), ("b.txt", b"two"), ("c.txt", b"three"), ("c.json", b"{}")]
    tars.hand_made_set(tmp_path / "set", "text", [members], ("json", "txt"))
    with caplog.at_level(logging.WARNING, logger="conan_core.data"):
        src = source(tmp_path / "set")
        assert [g["__key__"] for g in src] == ["a", "c"]
    assert src.counters()["partial_sample"] == 1
    assert "'b'" in caplog.text and "missing ['json']" in caplog.text
    with pytest.raises(DataError, match=r"sample 'b'.*partial sample"):
        list(source(tmp_path / "set", on_bad_sample="raise"))


def test_interleaved_keys_are_an_error_naming_the_key(tars, tmp_path):
    members = [("0.txt", b"zero"), ("1.txt", b"one"), ("0.json", b"{}"), ("1.json", b"{}")]
    tars.hand_made_set(tmp_path / "set", "text", [members], ("txt",), counts=[4])
    src = source(tmp_path / "set", verify=False)
    assert [g["__key__"] for g in src] == ["0", "1"]
    assert src.counters()["interleaved_key"] == 2
    tars.hand_made_set(tmp_path / "s2", "text", [members], ("json", "txt"), counts=[4])
    with pytest.raises(DataError, match="sample '0'") as exc:
        list(source(tmp_path / "s2", on_bad_sample="raise"))
    assert exc.value.key == "0"


# ----------------------------------------------------------------------------- shard problems

def _cut(path, size):
    with open(path, "r+b") as f:
        f.truncate(size)


def test_shard_cut_mid_member_strict_names_url_skip_counts_lost(harness):
    shard = harness / "shard-00003.tar"
    groups = list(iter_tar_groups(shard))
    _cut(shard, groups[5].next_offset + 512 + 7)  # 6 samples complete, then inside a .txt payload
    with pytest.raises(DataError) as exc:
        list(source(harness, verify=False, on_bad_sample="raise"))
    assert str(shard) in str(exc.value) and "unexpected end of data" in str(exc.value)
    assert exc.value.reason == "truncated_shard"
    src = source(harness, verify=False)
    got = list(src)
    c = src.counters()
    assert c["truncated_shard"] == 1 and c["lost_samples"] == 24 - 6
    assert len(got) == 8 * 24 - c["lost_samples"]
    assert {g["__key__"] for g in got if g["__url__"] == str(shard)} == {f"s003_{i:04d}" for i in range(6)}


def test_truncated_shard_with_verify_is_skipped_whole(harness):
    shard = harness / "shard-00002.tar"
    _cut(shard, 4696)
    src = source(harness)
    got = list(src)
    c = src.counters()
    assert c["sha_mismatch"] == 1 and c["truncated_shard"] == 1 and c["lost_samples"] == 24
    assert len(got) == 7 * 24 and not any(g["__url__"] == str(shard) for g in got)
    assert any(str(shard) in p and "(truncated)" in p for p in src.problems())


def test_cut_at_member_boundary_is_caught_by_the_manifest_count(harness, caplog):
    shard = harness / "shard-00001.tar"
    groups = list(iter_tar_groups(shard))
    _cut(shard, groups[1].next_offset)
    with pytest.raises(DataError, match=f"shard {shard}: expected 24 samples, got 2"):
        list(source(harness, verify=False, on_bad_sample="raise"))
    with caplog.at_level(logging.WARNING, logger="conan_core.data"):
        src = source(harness, verify=False)
        got = list(src)
    assert f"shard {shard}: expected 24 samples, got 2" in caplog.text
    c = src.counters()
    assert c["count_mismatch"] == 1 and c["lost_samples"] == 22 and len(got) == 8 * 24 - 22


def test_flipped_byte_is_a_sha_mismatch(harness):
    shard = harness / "shard-00004.tar"
    data = bytearray(shard.read_bytes())
    data[600] ^= 0x20
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"shard {shard}: sha256 mismatch") as exc:
        list(source(harness, on_bad_sample="raise"))
    assert exc.value.reason == "sha_mismatch"
    src = source(harness)
    assert len(list(src)) == 7 * 24
    assert src.counters()["sha_mismatch"] == 1 and src.counters()["lost_samples"] == 24
    assert len(list(source(harness, verify=False))) == 8 * 24  # the flip is inside text: unverified read passes


def test_missing_shard(harness):
    (harness / "shard-00000.tar").unlink()
    src = source(harness)
    assert len(list(src)) == 7 * 24
    assert src.counters()["missing_shard"] == 1 and src.counters()["lost_samples"] == 24
    with pytest.raises(DataError, match="shard-00000.tar: file is missing"):
        list(source(harness, on_bad_sample="raise"))


def test_every_counter_is_reported_even_when_zero(harness):
    src = source(harness)
    list(src)
    c = src.counters()
    for name in ("bad_text", "empty_text", "too_long", "missing_key", "partial_sample", "truncated_shard",
                 "lost_samples", "sha_mismatch", "count_mismatch", "interleaved_key"):
        assert c[name] == 0
    assert c["samples"] == 8 * 24


# ----------------------------------------------------------------------------- JSONL

def test_jsonl_bad_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [jbytes({"text": "one"}), b"", b'{"text": "bad \xff"}', b"not json", jbytes({"text": "  "}),
             jbytes({"text": "a\ud800"}), jbytes({"__key__": "named", "text": "six"})]
    path.write_bytes(b"\n".join(lines) + b"\n")
    src = REGISTRIES["sources"].build({"type": "jsonl", "path": str(path), "kind": "text", "loop": False,
                                       "shuffle_buffer": 0})
    got = list(src)
    assert [(g["__key__"], g["text"]) for g in got] == [("L1", "one"), ("named", "six")]
    c = src.counters()
    assert (c["bad_text"], c["bad_json"], c["empty_text"]) == (2, 1, 1)
    with pytest.raises(DataError, match=r"d.jsonl: sample 'L3': line is not valid UTF-8"):
        list(REGISTRIES["sources"].build({"type": "jsonl", "path": str(path), "kind": "text", "loop": False,
                                          "on_bad_sample": "raise"}))


def test_written_bad_data_never_reaches_the_consumer(tmp_path):
    samples = [{"text": "ok"}, {"text": "ok2"}]
    write_shards(samples, tmp_path / "w", kind="text")
    src = source(tmp_path / "w", max_chars=2)
    assert [g["text"] for g in src] == ["ok", "ok"]
    assert src.counters()["too_long"] == 1


def test_garbage_instead_of_a_tar_is_an_unreadable_shard(harness):
    shard = harness / "shard-00006.tar"
    shard.write_bytes(bytes(range(256)) * 8)
    src = source(harness, verify=False)
    assert len(list(src)) == 7 * 24
    assert src.counters()["truncated_shard"] == 1 and src.counters()["lost_samples"] == 24
    with pytest.raises(DataError, match=f"shard {shard}: unreadable after 0 samples"):
        list(source(harness, verify=False, on_bad_sample="raise"))
