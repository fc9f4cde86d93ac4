"""The ``lookup`` translator: parallel-data lookups with English as pivot."""

from __future__ import annotations

import json

import pytest

from conan_core.registries import REGISTRIES
from conan_core.testing import check_component
from conan_core.translators.lookup import LookupTranslator, ParallelDataError, normalize_key, read_parallel

ROWS = [
    {"lang": "de", "text": "Deutschland", "en": "Germany"},
    {"lang": "fr", "text": "Allemagne", "en": "Germany"},
    {"lang": "ja", "text": "ドイツ", "en": "Germany"},
    {"lang": "de", "text": "Frankreich", "en": "France"},
    {"lang": "de", "text": "Zweite Übersetzung", "en": "Germany"},  # later duplicate: ignored
]


@pytest.fixture
def parallel(tmp_path):
    path = tmp_path / "parallel.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS) + "\n\n", encoding="utf-8")
    return path


def test_translate_directions(parallel):
    tr = REGISTRIES["translators"].build({"type": "lookup", "path": str(parallel)})
    assert isinstance(tr, LookupTranslator)
    assert tr.translate(["Germany", "France", "Spain"], "en", "de") == ["Deutschland", "Frankreich", None]
    assert tr.translate(["Allemagne"], "fr", "en") == ["Germany"]
    assert tr.translate(["Deutschland", "Frankreich"], "de", "ja") == ["ドイツ", None]  # pivot through en
    assert tr.translate(["anything"], "de", "de") == ["anything"]
    assert tr.translate([], "en", "fr") == []
    assert tr.languages() == {"en", "de", "fr", "ja"}


def test_normalisation(parallel):
    tr = LookupTranslator(LookupTranslator.Config(path=str(parallel)))
    assert tr.translate(["  germany\t", "GERMANY"], "en", "fr") == ["Allemagne", "Allemagne"]
    strict = LookupTranslator(LookupTranslator.Config(path=str(parallel), normalize=False))
    assert strict.translate(["germany", "Germany"], "en", "fr") == [None, "Allemagne"]
    assert normalize_key("  A\u0301  b ", True) == "\u00e1 b"
    assert normalize_key("  A ", False) == "  A "


def test_runtime_rows_replace_the_file():
    tr = LookupTranslator(LookupTranslator.Config(path="unused"), rows=ROWS[:1])
    assert tr.translate(["Germany"], "en", "de") == ["Deutschland"]


def test_bad_files(tmp_path):
    with pytest.raises(ParallelDataError, match="not found"):
        read_parallel(tmp_path / "none.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps({"lang": "de", "text": ""}) + "\n")
    with pytest.raises(ParallelDataError, match=r"bad\.jsonl:2.*\['text', 'en'\]"):
        read_parallel(bad)
    bad.write_text("[1, 2]\n")
    with pytest.raises(ParallelDataError, match="bad.jsonl:1: expected an object"):
        read_parallel(bad)
    bad.write_text("{oops\n")
    with pytest.raises(ParallelDataError, match="invalid JSON"):
        read_parallel(bad)


def test_config_is_strict(parallel):
    from conan_core.errors import ConfigError

    with pytest.raises(ConfigError, match="normalise"):
        REGISTRIES["translators"].build({"type": "lookup", "path": str(parallel), "normalise": True})


def test_conformance(tmp_path):
    check_component("translators", "lookup", tmp_dir=tmp_path)
