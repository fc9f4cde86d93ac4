"""``lookup``: translation by exact lookup in parallel data (no model, no network)."""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Iterable, Mapping

from pydantic import Field

from conan_core.errors import DataError
from conan_core.registry import ComponentConfig
from conan_core.translators.base import Translator


class ParallelDataError(DataError):
    """A parallel-data file is missing or has a bad line (the message names file and line)."""


def normalize_key(text: str, normalize: bool) -> str:
    """The lookup key of ``text``: NFC, whitespace runs collapsed, stripped, casefolded when
    ``normalize``; ``text`` unchanged otherwise."""
    if not normalize:
        return text
    return " ".join(unicodedata.normalize("NFC", text).split()).casefold()


def read_parallel(path: str | Path) -> list[dict]:
    """Rows ``{"lang", "text", "en"}`` of a parallel JSONL file (``text`` is ``en`` in ``lang``).

    Blank lines are skipped; a bad line raises :class:`ParallelDataError` with file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise ParallelDataError(f"{path}: parallel data file not found (JSONL lines "
                                '{"lang": "de", "text": "...", "en": "..."})')
    from conan_core.jsonl import iter_jsonl

    rows = []
    for lineno, row in iter_jsonl(path, error=ParallelDataError):
        if not isinstance(row, dict):
            raise ParallelDataError(f"{path}:{lineno}: expected an object, got {type(row).__name__}")
        bad = [k for k in ("lang", "text", "en") if not isinstance(row.get(k), str) or not row[k].strip()]
        if bad:
            raise ParallelDataError(f"{path}:{lineno}: field(s) {bad} missing or not a non-empty "
                                    'string; each line is {"lang": CODE, "text": TRANSLATION, "en": ENGLISH}')
        rows.append(row)
    return rows


class ParallelTable:
    """English-pivot translation table shared by the data-backed translators.

    ``add(lang, text, en)`` records one translation; ``translate(texts, src, tgt)`` looks each text
    up: en→X through ``en``, X→en through ``text``, X→Y as X→en→Y; None when a step has no entry.
    When one key has several translations the first added wins (deterministic for a fixed order).
    """

    def __init__(self, normalize: bool = True):
        self.normalize = normalize
        self._to: dict[tuple[str, str], str] = {}  # (lang, key of English) -> translation
        self._from: dict[tuple[str, str], str] = {}  # (lang, key of translation) -> English

    def add(self, lang: str, text: str, en: str) -> None:
        """Record that ``text`` (in ``lang``) translates English ``en`` (first entry wins)."""
        self._to.setdefault((lang, normalize_key(en, self.normalize)), text)
        self._from.setdefault((lang, normalize_key(text, self.normalize)), en)

    def __len__(self) -> int:
        return len(self._to)

    def languages(self) -> set[str]:
        return {"en"} | {lang for lang, _ in self._to}

    def one(self, text: str, src: str, tgt: str) -> str | None:
        if src == tgt:
            return text
        en = text if src == "en" else self._from.get((src, normalize_key(text, self.normalize)))
        if en is None or tgt == "en":
            return en
        return self._to.get((tgt, normalize_key(en, self.normalize)))

    def translate(self, texts: list[str], src_lang: str, tgt_lang: str) -> list[str | None]:
        return [self.one(t, src_lang, tgt_lang) for t in texts]


class LookupTranslator(Translator):
    """Translate by looking texts up in parallel data ``{"lang", "text", "en"}``.

    English is the pivot: en→X looks up ``en``; X→en looks up ``text``; X→Y goes X→en→Y. A text
    with no entry gives None. When one key has several translations, the first in file order
    wins (deterministic). Runtime: ``rows`` (an iterable of such dicts) replaces reading
    ``config.path``.
    """

    class Config(ComponentConfig):
        path: str = Field(..., description="parallel JSONL file: one {lang, text, en} object per line")
        normalize: bool = Field(True, description="match keys after NFC, whitespace collapsing and casefolding")

    def __init__(self, config: Config, *, rows: Iterable[Mapping[str, str]] | None = None, **runtime):
        self.config = config
        self.table = ParallelTable(config.normalize)
        for row in (read_parallel(config.path) if rows is None else rows):
            self.add(row["lang"], row["text"], row["en"])

    @classmethod
    def example_config(cls, tmp_dir: Path) -> dict:
        """A two-row parallel file (de, fr) in ``tmp_dir``."""
        import json

        path = Path(tmp_dir) / "parallel.jsonl"
        rows = [{"lang": "de", "text": "Datei öffnen", "en": "Open file"},
                {"lang": "fr", "text": "Ouvrir le fichier", "en": "Open file"}]
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        return {"path": str(path)}

    def add(self, lang: str, text: str, en: str) -> None:
        """Record that ``text`` (in ``lang``) translates English ``en`` (first entry wins)."""
        self.table.add(lang, text, en)

    def languages(self) -> set[str]:
        return self.table.languages()

    def translate(self, texts: list[str], src_lang: str, tgt_lang: str) -> list[str | None]:
        """One entry per text: its translation into ``tgt_lang``, or None when unknown."""
        return self.table.translate(texts, src_lang, tgt_lang)
