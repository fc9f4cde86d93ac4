"""CLR builder: only queries translated, language shares within one point, missing translations."""

from __future__ import annotations

import json

import pytest

from conan_core.data.clr import (PAPER_LANG_SHARES, CLRError, assign_clr, build_clr, normalize_shares,
                                 parse_shares, quotas)
from conan_core.data.shards import write_shards
from conan_core.translators.lookup import LookupTranslator


def _samples(n: int) -> list[dict]:
    return [{"query": f"question {i}", "pos": f"passage {i}", "neg": [f"neg {i} {k}" for k in range(7)],
             "task": "retrieval", "lang": "en", "id": f"r{i}"} for i in range(n)]


def _translator(n: int, missing=lambda lang, i: False) -> LookupTranslator:
    rows = [{"lang": lang, "text": f"[{lang}] question {i}", "en": f"question {i}"}
            for lang in PAPER_LANG_SHARES if lang != "en" for i in range(n) if not missing(lang, i)]
    return LookupTranslator(LookupTranslator.Config(path="<rows>"), rows=rows)


def test_paper_table():
    assert len(PAPER_LANG_SHARES) == 26 and sum(PAPER_LANG_SHARES.values()) == 106
    shares = normalize_shares(PAPER_LANG_SHARES)
    assert abs(sum(shares.values()) - 1) < 1e-12 and shares["en"] == pytest.approx(25 / 106)


def test_quotas_largest_remainder():
    shares = normalize_shares(PAPER_LANG_SHARES)
    for n in (0, 1, 7, 106, 999, 1000):
        q = quotas(shares, n)
        assert sum(q.values()) == n
        assert all(abs(q[k] - shares[k] * n) < 1 for k in shares)


@pytest.mark.parametrize("n,seed", [(1000, 0), (537, 3)])
def test_shares_within_one_point(n, seed):
    samples = _samples(n)
    out, summary = assign_clr(samples, _translator(n), PAPER_LANG_SHARES, seed=seed)
    requested = normalize_shares(PAPER_LANG_SHARES)
    for lang, share in requested.items():
        got = sum(s["lang"] == lang for s in out) / n
        assert abs(got - share) * 100 <= 1.0, (lang, got, share)
    assert summary["redrawn"] == summary["swapped"] == summary["kept_source"] == 0
    for s, src in zip(out, samples):
        assert s["task"] == "clr" and s["src_lang"] == "en"
        assert s["pos"] == src["pos"] and s["neg"] == src["neg"] and s["id"] == src["id"]  # docs stay
        expected = src["query"] if s["lang"] == "en" else f"[{s['lang']}] {src['query']}"
        assert s["query"] == expected
    assert samples[0]["task"] == "retrieval"  # inputs are not modified


def test_deterministic_and_seeded():
    a, _ = assign_clr(_samples(300), _translator(300), PAPER_LANG_SHARES, seed=1)
    b, _ = assign_clr(_samples(300), _translator(300), PAPER_LANG_SHARES, seed=1)
    c, _ = assign_clr(_samples(300), _translator(300), PAPER_LANG_SHARES, seed=2)
    assert a == b and [s["lang"] for s in a] != [s["lang"] for s in c]


def test_missing_translations_are_redrawn_and_counted():
    n = 1000
    # no Khmer at all, Japanese for even queries only
    tr = _translator(n, missing=lambda lang, i: lang == "km" or (lang == "ja" and i % 2))
    out, summary = assign_clr(_samples(n), tr, PAPER_LANG_SHARES, seed=0)
    requested = normalize_shares(PAPER_LANG_SHARES)
    km_quota = quotas(requested, n)["km"]
    assert summary["counts"]["km"] == 0 and summary["redrawn"] == km_quota  # nobody can take km
    assert summary["swapped"] > 0 and summary["kept_source"] == 0
    for lang, share in requested.items():
        if lang != "km":  # the only language that cannot be served
            assert abs(summary["counts"][lang] / n - share) * 100 <= 1.0, lang
    for s in out:  # every query is in its assigned language for real
        assert s["lang"] != "km"
        if s["lang"] == "ja":
            assert int(s["id"][1:]) % 2 == 0
    assert sum(summary["counts"].values()) == n


def test_no_translation_anywhere_keeps_source():
    empty = LookupTranslator(LookupTranslator.Config(path="<rows>"), rows=[])
    out, summary = assign_clr(_samples(20), empty, {"de": 1, "fr": 1}, seed=0)
    assert summary["kept_source"] == 20 and summary["redrawn"] == 0
    assert all(s["lang"] == "en" and s["query"].startswith("question") for s in out)


def test_parse_and_validate_shares():
    assert parse_shares("paper") == PAPER_LANG_SHARES
    assert parse_shares("de:5, fr:6,") == {"de": 5.0, "fr": 6.0}
    for bad in ("de5", "de:x", ":3"):
        with pytest.raises(CLRError, match="LANG:SHARE"):
            parse_shares(bad)
    with pytest.raises(CLRError, match=">= 0"):
        normalize_shares({"de": -1})
    with pytest.raises(CLRError, match="sum to 0"):
        normalize_shares({"de": 0})
    with pytest.raises(CLRError, match="no languages"):
        normalize_shares({})


def test_build_clr_from_shards(tmp_path):
    n = 400
    samples = _samples(n) + [{"query": "cls text", "pos": "label", "neg": ["x"], "task": "classification",
                              "lang": "en"}]
    write_shards(samples, tmp_path / "retrieval", kind="pairs", shard_size=150)
    parallel = tmp_path / "parallel.jsonl"
    parallel.write_text("\n".join(json.dumps({"lang": lang, "text": f"{lang}-{i}", "en": f"question {i}"})
                                  for lang in ("de", "fr") for i in range(n)) + "\n")
    summary = build_clr(tmp_path / "retrieval", parallel, {"en": 2, "de": 5, "fr": 3}, tmp_path / "clr", seed=0,
                        shard_size=100)
    assert summary["written"] == n  # the classification pair was not used
    assert json.loads((tmp_path / "clr" / "clr_summary.json").read_text())["written"] == n
    from conan_core.data.clr import read_pairs

    out = list(read_pairs(tmp_path / "clr"))
    assert len(out) == n
    got = {lang: sum(s["lang"] == lang for s in out) for lang in ("en", "de", "fr")}
    assert got == {"en": 80, "de": 200, "fr": 120}
    for s in out:
        i = int(s["id"][1:])
        assert s["pos"] == f"passage {i}"
        assert s["query"] == (f"question {i}" if s["lang"] == "en" else f"{s['lang']}-{i}")


def test_build_clr_errors(tmp_path):
    write_shards([{"text": "t"}], tmp_path / "text", kind="text")
    with pytest.raises(CLRError, match="kind 'text'"):
        build_clr(tmp_path / "text", tmp_path / "p.jsonl", None, tmp_path / "o")
    write_shards(_samples(3), tmp_path / "pairs", kind="pairs")
    with pytest.raises(CLRError, match="no samples with task"):
        build_clr(tmp_path / "pairs", tmp_path / "p.jsonl", None, tmp_path / "o", tasks=("nothing",))
    with pytest.raises(CLRError, match="parallel JSONL path, a translator spec dict or a Translator"):
        build_clr(tmp_path / "pairs", 42, None, tmp_path / "o")


def test_cli(tmp_path, capsys):
    import argparse

    from conan_core.commands.data_demo import add_data_commands

    write_shards(_samples(50), tmp_path / "r", kind="pairs")
    parallel = tmp_path / "p.jsonl"
    parallel.write_text("\n".join(json.dumps({"lang": "de", "text": f"Frage {i}", "en": f"question {i}"})
                                  for i in range(50)) + "\n")
    parser = argparse.ArgumentParser()
    add_data_commands(parser.add_subparsers(dest="data_command"))
    args = parser.parse_args(["clr", "--retrieval", str(tmp_path / "r"), "--translations", str(parallel),
                              "--langs", "de:1,en:1", "--out", str(tmp_path / "o")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "wrote 50 CLR pairs" in out and json.loads(out.splitlines()[-1]) == {"de": 50.0, "en": 50.0}


def _no_lang(n: int) -> list[dict]:
    return [{k: v for k, v in s.items() if k != "lang"} for s in _samples(n)]


def _german(tmp_path, n: int):
    parallel = tmp_path / "p.jsonl"
    parallel.write_text("\n".join(json.dumps({"lang": "de", "text": f"Frage {i}", "en": f"question {i}"})
                                  for i in range(n)) + "\n")
    return parallel


def test_pairs_without_language_are_an_error_naming_file_and_line(tmp_path):
    parallel = _german(tmp_path, 5)
    pairs = tmp_path / "pairs.jsonl"
    rows = _samples(2) + _no_lang(3)
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(CLRError, match=rf"{pairs}:3: pair has no query language .*3 of 5 pairs.*--src-lang"):
        build_clr(pairs, parallel, {"de": 1}, tmp_path / "o")
    assert not (tmp_path / "o").exists()
    # the shard writer stores a missing lang as "und", which is no language either
    write_shards(_no_lang(4), tmp_path / "shards", kind="pairs")
    with pytest.raises(CLRError, match=r"shard-00000\.tar \(sample s000000000\): pair has no query language"):
        build_clr(tmp_path / "shards", parallel, {"de": 1}, tmp_path / "o")
    with pytest.raises(CLRError, match=r"sample 0 \(id 'r0'\) has no language"):
        assign_clr(_no_lang(2), _translator(2), {"de": 1})


def test_src_lang_states_the_language_of_pairs_without_one(tmp_path):
    parallel = _german(tmp_path, 5)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in _no_lang(5)))
    summary = build_clr(pairs, parallel, {"de": 1}, tmp_path / "o", src_lang="en")
    from conan_core.data.clr import read_pairs

    out = list(read_pairs(tmp_path / "o"))
    assert summary["counts"] == {"de": 5} and summary["kept_source"] == 0
    assert sorted(s["query"] for s in out) == [f"Frage {i}" for i in range(5)]
    assert {s["src_lang"] for s in out} == {"en"}


def test_bad_jsonl_pair_names_file_and_line(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps(_samples(1)[0]) + "\n" + json.dumps({"query": "q"}) + "\n")
    with pytest.raises(CLRError, match=rf"{pairs}:2: missing required field"):
        build_clr(pairs, _german(tmp_path, 1), {"de": 1}, tmp_path / "o")
    with pytest.raises(CLRError, match="no such retrieval set"):
        build_clr(tmp_path / "absent", _german(tmp_path, 1), {"de": 1}, tmp_path / "o")


def test_cli_exits_non_zero_naming_file_and_line_for_pairs_without_lang(tmp_path):
    import subprocess
    import sys

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in _samples(1) + _no_lang(2)))
    cmd = [sys.executable, "-m", "conan_core.cli", "data", "clr", "--retrieval", str(pairs),
           "--translations", str(_german(tmp_path, 3)), "--langs", "de:1", "--out", str(tmp_path / "o")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert f"{pairs}:2: pair has no query language" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run(cmd + ["--src-lang", "en"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "wrote 3 CLR pairs" in res.stdout


def test_cli_with_the_gettext_translator(tmp_path, capsys):
    import argparse

    from conan_core.commands.data_demo import add_data_commands

    pairs = tmp_path / "pairs.jsonl"
    queries = ["Enter a valid email address.", "Log out", "Change password"]
    pairs.write_text("".join(json.dumps({"query": q, "pos": f"doc {i}", "neg": [], "lang": "en", "task": "retrieval"})
                             + "\n" for i, q in enumerate(queries)))
    parser = argparse.ArgumentParser()
    add_data_commands(parser.add_subparsers(dest="data_command"))
    spec = json.dumps({"type": "gettext", "include": ["django/conf", "django/contrib/admin", "django/contrib/auth"],
                       "languages": ["de"]})
    args = parser.parse_args(["clr", "--retrieval", str(pairs), "--translator", spec, "--langs", "de:1",
                              "--out", str(tmp_path / "o")])
    assert args.func(args) == 0
    from conan_core.data.clr import read_pairs
    from conan_core.translators.gettext import GettextTranslator

    out = {s["pos"]: s for s in read_pairs(tmp_path / "o")}
    expected = GettextTranslator(GettextTranslator.Config(languages=["de"])).translate(queries, "en", "de")
    assert all(expected) and [out[f"doc {i}"]["query"] for i in range(3)] == expected
    assert {s["lang"] for s in out.values()} == {"de"}
    for bad in ('{"packages": ["django"]}', "{not json"):
        args = parser.parse_args(["clr", "--retrieval", str(pairs), "--translator", bad, "--out", str(tmp_path / "x")])
        with pytest.raises(CLRError, match="--translator"):
            args.func(args)
