"""Shard writing, manifests, checks and the `conan data` commands."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from conan_core.commands import data as data_cmd
from conan_core.data.samples import DataError
from conan_core.data.shards import (MANIFEST_NAME, build_manifest, check_shards, file_sha256,
                                    iter_tar_groups, read_manifest, write_shards)
from conan_core.registries import REGISTRIES


PAIRS = [{"query": f"q {i} é", "pos": f"p {i}", "neg": [f"n {i}", f"m {i}"], "task": "retrieval" if i % 2 else "clr",
          "lang": "en", "id": f"id{i}", "instruction": "", "label": "x", "teacher": 0.5}
         for i in range(23)]
STS = [{"s1": f"a {i}", "s2": f"b {i}", "score": i / 4} for i in range(11)]
TEXT = [{"text": f"document {i} 日本語 \U0001F600"} for i in range(17)]


def read_back(directory, key):
    src = REGISTRIES["sources"].build({"type": key, "path": str(directory), "shuffle_buffer": 0,
                                       "shuffle_shards": False, "loop": False})
    return list(src)


@pytest.mark.parametrize("kind,key,samples", [("text", "text_shards", TEXT), ("pairs", "pair_shards", PAIRS),
                                              ("sts", "sts_shards", STS)])
def test_written_shards_read_back_identical(tmp_path, kind, key, samples):
    manifest = write_shards(samples, tmp_path, kind=kind, shard_size=5)
    assert manifest.count == len(samples)
    assert [s.count for s in manifest.shards] == [5] * (len(samples) // 5) + ([len(samples) % 5] if len(samples) % 5 else [])
    got = read_back(tmp_path, key)
    assert [g["__key__"] for g in got] == [f"s{i:09d}" for i in range(len(samples))]
    for sample, g in zip(samples, got):
        assert g["__url__"].endswith(".tar") and Path(g["__url__"]).parent == tmp_path
        assert {k: v for k, v in g.items() if not k.startswith("__")} == sample


def test_pairs_defaults_filled_and_keys_kept(tmp_path):
    write_shards([{"__key__": "a1", "query": "q", "pos": "p"}], tmp_path, kind="pairs")
    (got,) = read_back(tmp_path, "pair_shards")
    assert got["__key__"] == "a1"
    assert (got["neg"], got["task"], got["lang"]) == ([], "default", "und")


def test_manifest_records_counts_hashes_and_sizes(tmp_path):
    written = write_shards(TEXT, tmp_path, kind="text", shard_size=4, prefix="part")
    on_disk = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert on_disk["kind"] == "text" and on_disk["count"] == 17 and on_disk["fields"] == ["json"]
    manifest = read_manifest(tmp_path)
    assert manifest == written
    assert [s.name for s in manifest.shards] == [f"part-{i:05d}.tar" for i in range(5)]
    for shard in manifest.shards:
        path = tmp_path / shard.name
        assert shard.sha256 == file_sha256(path) and shard.bytes == path.stat().st_size
        groups = list(iter_tar_groups(path))
        assert len(groups) == shard.count and all(list(g.members) == ["json"] for g in groups)
    assert check_shards(tmp_path) == []


def test_writing_is_deterministic(tmp_path):
    a = write_shards(PAIRS, tmp_path / "a", kind="pairs", shard_size=7)
    b = write_shards(PAIRS, tmp_path / "b", kind="pairs", shard_size=7)
    assert a.fingerprint() == b.fingerprint()
    assert [s.sha256 for s in a.shards] == [s.sha256 for s in b.shards]


def test_failed_write_leaves_no_temp_files_and_keeps_old_manifest(tmp_path):
    write_shards(TEXT, tmp_path, kind="text", shard_size=4)
    before = (tmp_path / MANIFEST_NAME).read_text()

    def broken():
        yield from TEXT[:6]
        raise RuntimeError("producer died")

    with pytest.raises(RuntimeError):
        write_shards(broken(), tmp_path, kind="text", shard_size=4)
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]
    assert (tmp_path / MANIFEST_NAME).read_text() == before


def test_rewrite_removes_shards_the_new_manifest_does_not_list(tmp_path):
    write_shards(TEXT, tmp_path, kind="text", shard_size=4)
    write_shards(TEXT[:3], tmp_path, kind="text", shard_size=4)
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == ["shard-00000.tar"]
    assert check_shards(tmp_path) == []


def test_writer_rejects_bad_samples_naming_index_and_key(tmp_path):
    bad = [{"text": "fine"}, {"__key__": "k7", "text": "  "}]
    with pytest.raises(DataError, match=r"sample 'k7'.*sample #1.*empty") as exc:
        write_shards(bad, tmp_path, kind="text")
    assert exc.value.reason == "empty_text"
    manifest = write_shards(bad + [{"query": "q"}], tmp_path, kind="text", on_bad_sample="skip")
    assert manifest.count == 1
    with pytest.raises(DataError, match="duplicate __key__ 'x'"):
        write_shards([{"__key__": "x", "text": "a"}, {"__key__": "x", "text": "b"}], tmp_path, kind="text")
    with pytest.raises(DataError, match="must not contain '.'"):
        write_shards([{"__key__": "a.b", "text": "a"}], tmp_path, kind="text")
    with pytest.raises(DataError, match="unknown kind"):
        write_shards([], tmp_path, kind="image")


def test_empty_input_gives_empty_manifest(tmp_path):
    manifest = write_shards([], tmp_path, kind="sts")
    assert manifest.count == 0 and manifest.shards == ()
    assert check_shards(tmp_path) == []


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


def test_check_catches_truncation_flipped_byte_boundary_cut_and_missing_shard(tmp_path):
    write_shards(({"text": f"text number {i} " * 20} for i in range(40)), tmp_path, kind="text", shard_size=10)
    shards = sorted(tmp_path.glob("*.tar"))
    _truncate(shards[0], list(iter_tar_groups(shards[0]))[4].next_offset + 512 + 10)  # inside a payload
    data = bytearray(shards[1].read_bytes())
    data[700] ^= 0x01  # inside the first member's payload: the tar stays readable
    shards[1].write_bytes(bytes(data))
    groups = list(iter_tar_groups(shards[2]))
    _truncate(shards[2], groups[1].next_offset)  # exactly at a member boundary: reads without error
    shards[3].unlink()
    problems = check_shards(tmp_path)
    text = "\n".join(problems)
    assert any(str(shards[0]) in p and "unreadable tar" in p for p in problems), text
    assert any(str(shards[0]) in p and "(truncated?)" in p for p in problems), text
    assert [p for p in problems if str(shards[1]) in p] == [
        p for p in problems if str(shards[1]) in p and "sha256 mismatch" in p] != [], text
    assert any(str(shards[2]) in p and "expected 10 samples, got 2" in p for p in problems), text
    assert any(str(shards[3]) in p and "missing shard" in p for p in problems), text


def test_check_reports_partial_and_interleaved_samples(tars, tmp_path):
    tars.hand_made_set(tmp_path, "text", [[("0.txt", b"a"), ("1.txt", b"b"), ("0.json", b"{}"),
                                      ("2.txt", b"c"), ("2.json", b"{}")]], ("json", "txt"))
    problems = check_shards(tmp_path)
    assert any("partial sample '0'" in p for p in problems)
    assert any("'0' appears again" in p for p in problems)


def test_webdataset_reads_our_shards(tmp_path):
    webdataset = pytest.importorskip("webdataset")
    write_shards(PAIRS[:6], tmp_path, kind="pairs", shard_size=4)
    urls = [str(p) for p in sorted(tmp_path.glob("*.tar"))]
    got = list(webdataset.WebDataset(urls, shardshuffle=False))
    assert [g["__key__"] for g in got] == [f"s{i:09d}" for i in range(6)]
    assert [json.loads(g["json"])["query"] for g in got] == [p["query"] for p in PAIRS[:6]]


def test_build_manifest_for_hand_made_tars(tars, tmp_path):
    tars.write_tar(tmp_path / "a.tar", [("x1.txt", b"hello"), ("x1.json", b'{"i": 1}'), ("x2.txt", b"bye"),
                                        ("x2.json", b'{"i": 2}')])
    manifest = build_manifest(tmp_path, "text")
    assert manifest.count == 2 and manifest.fields == ("json", "txt")
    assert read_manifest(tmp_path) == manifest
    got = read_back(tmp_path, "text_shards")
    assert [(g["__key__"], g["text"], g["i"]) for g in got] == [("x1", "hello", 1), ("x2", "bye", 2)]


def test_read_manifest_errors_say_what_to_do(tmp_path):
    with pytest.raises(DataError, match="no manifest.json.*write-shards"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"format": "conan-shards/1", "kind": "text", "count": 3,
                                                      "shards": []}))
    with pytest.raises(DataError, match="count is 3 but the shards hold 0"):
        read_manifest(tmp_path)


# ----------------------------------------------------------------------------- CLI

def test_cli_write_shards_and_check(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(p) for p in PAIRS) + "\n\n", encoding="utf-8")
    out = tmp_path / "out"
    assert data_cmd.main(["write-shards", "--input", str(src), "--kind", "pairs", "--out", str(out),
                          "--shard-size", "10"]) == 0
    assert read_manifest(out).count == len(PAIRS)
    assert data_cmd.main(["check", str(out)]) == 0
    assert "OK" in capsys.readouterr().out
    bad = out / "shard-00001.tar"
    _truncate(bad, bad.stat().st_size - 1500)
    assert data_cmd.main(["check", str(out)]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "shard-00000.tar" not in err

    txt = tmp_path / "in.txt"
    txt.write_text("first line\n\nsecond line\n", encoding="utf-8")
    assert data_cmd.main(["write-shards", "--input", str(txt), "--kind", "text", "--out", str(tmp_path / "t")]) == 0
    assert [g["text"] for g in read_back(tmp_path / "t", "text_shards")] == ["first line", "second line"]
    assert data_cmd.main(["write-shards", "--input", str(txt), "--kind", "pairs", "--out", str(tmp_path / "u")]) == 3
    assert "--kind must be text" in capsys.readouterr().err


def test_write_shards_names_the_bad_utf8_line_or_skips_and_counts_it(tmp_path, capsys):
    txt = tmp_path / "in.txt"
    txt.write_bytes(b"good one\nbad \xff\xfe here\nanother good\n")
    out = tmp_path / "out"
    assert data_cmd.main(["write-shards", "--input", str(txt), "--kind", "text", "--out", str(out)]) == 3
    err = capsys.readouterr().err
    assert f"{txt}:2: not valid UTF-8" in err and "Traceback" not in err and not list(out.iterdir())
    assert data_cmd.main(["write-shards", "--input", str(txt), "--kind", "text", "--out", str(out), "--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert "wrote 2 text samples" in captured.out and "skipped 1 bad input(s): bad_text 1" in captured.err
    assert [g["text"] for g in read_back(out, "text_shards")] == ["good one", "another good"]


def test_check_reports_samples_the_readers_would_skip_and_unlisted_tars(tars, tmp_path, capsys):
    tars.hand_made_set(tmp_path, "text", [[("a.txt", b"fine"), ("a.json", b"{}"), ("b.txt", b"\xff\xfe"),
                                           ("b.json", b"{}"), ("c.txt", b"   "), ("c.json", b"{}")]],
                       ("json", "txt"))
    tars.write_tar(tmp_path / "shard-00001.tar", [("d.txt", b"never read"), ("d.json", b"{}")])
    problems = check_shards(tmp_path)
    assert any("1 sample(s) the readers would skip as bad_text: 'b'" in p for p in problems)
    assert any("as empty_text: 'c'" in p for p in problems)
    assert any(p.startswith(str(tmp_path / "shard-00001.tar")) and "does not list" in p for p in problems)
    assert data_cmd.main(["check", str(tmp_path)]) == 1
    assert "OK" not in capsys.readouterr().out


def test_add_commands_reuses_an_existing_data_group():
    parser = argparse.ArgumentParser(prog="conan")
    top = parser.add_subparsers(dest="command")
    existing = top.add_parser("data").add_subparsers(dest="data_command")
    existing.add_parser("demo").set_defaults(func=lambda a: 0)
    data_cmd.add_commands(top)
    args = parser.parse_args(["data", "check", "somewhere"])
    assert args.func is data_cmd.cmd_check and args.dir == "somewhere"
    assert parser.parse_args(["data", "demo"]).func(None) == 0
