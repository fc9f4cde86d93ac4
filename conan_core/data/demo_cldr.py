"""Real multilingual parallel text of the demo corpus: CLDR display names shipped by ``babel``.

The Unicode CLDR gives human translations of the names of territories, languages, currencies and
scripts in every language of RECIPE §6. Each *item* (``territory:DE``) has its name in up to 26
languages (parallel text) and an English record built only from CLDR facts (the languages spoken
in a territory, the currency it uses, the script a language is written in ...): that record is
the English document that a query in any language must retrieve.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Iterable

#: RECIPE §6 language codes -> babel (CLDR) locale identifiers.
BABEL_LOCALES = {"zh": "zh_Hans"}
CATEGORIES = ("territory", "language", "currency", "script")
#: an item is kept when its name exists in at least this many of the requested languages.
MIN_LANGS = 13
#: record lines list at most this many related names.
MAX_LIST = 8


@dataclass(frozen=True)
class CldrItem:
    """One CLDR entity. ``names``: language code -> display name (``en`` always present);
    ``doc``: English record (name, code, related facts); ``tags``: codes of related entities, used
    to find hard negatives (items sharing tags are related)."""

    key: str
    category: str
    code: str
    names: dict[str, str] = field(hash=False)
    doc: str = field(hash=False)
    tags: frozenset[str] = field(hash=False)

    @property
    def en(self) -> str:
        return self.names["en"]


def _locale(lang: str):
    from babel import Locale

    return Locale.parse(BABEL_LOCALES.get(lang, lang))


def language_name(code: str) -> str:
    """English name of a RECIPE language code (``zh`` -> Chinese, ``no`` -> Norwegian)."""
    return _locale("en").languages.get(code) or code


def _names(locales: dict, attr: str, code: str) -> dict[str, str]:
    out = {}
    for lang, loc in locales.items():
        name = getattr(loc, attr).get(code)
        if isinstance(name, str) and name.strip():
            out[lang] = name.strip()
    return out


def _listing(names: list[str], limit: int = MAX_LIST) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def cldr_items(langs: Iterable[str]) -> list[CldrItem]:
    """Items of :data:`CATEGORIES` with names in ``langs`` (``en`` is always added), sorted by key.

    Only items with an English name, names in at least ``min(MIN_LANGS, len(langs))`` languages
    and at least one CLDR fact for their record are kept.
    """
    return list(_cldr_items(tuple(["en"] + sorted(set(langs) - {"en"}))))


@functools.lru_cache(maxsize=4)
def _cldr_items(langs: tuple[str, ...]) -> tuple[CldrItem, ...]:
    from babel.core import get_global

    locales = {lang: _locale(lang) for lang in langs}
    en = locales["en"]
    need = min(MIN_LANGS, len(langs))
    territory_languages = get_global("territory_languages")
    territory_currencies = get_global("territory_currencies")
    likely = get_global("likely_subtags")

    def ok(names: dict) -> bool:
        return "en" in names and len(names) >= need

    terr_langs: dict[str, list[tuple[str, bool]]] = {}  # territory -> [(language, official)]
    lang_terrs: dict[str, list[tuple[float, str, bool]]] = {}
    for terr, table in sorted(territory_languages.items()):
        if not (len(terr) == 2 and terr.isalpha()):
            continue
        rows = sorted(table.items(), key=lambda kv: (-(kv[1].get("population_percent") or 0.0), kv[0]))
        terr_langs[terr] = [(code, bool(info.get("official_status"))) for code, info in rows]
        for code, info in rows:
            lang_terrs.setdefault(code, []).append(
                (-(info.get("population_percent") or 0.0), terr, bool(info.get("official_status"))))
    current_currency: dict[str, str] = {}
    for terr, spans in territory_currencies.items():
        live = [c for c, _start, end, tender in spans if end is None and tender]
        if live:
            current_currency[terr] = live[-1]

    items: list[CldrItem] = []

    def mark(name: str, official: bool) -> str:
        return f"{name} (official)" if official else name

    for terr in sorted(terr_langs):
        names = _names(locales, "territories", terr)
        spoken = [mark(en.languages[c], o) for c, o in terr_langs[terr] if c in en.languages]
        if not ok(names) or not spoken:
            continue
        lines = [names["en"], f"Region code: {terr}", f"Languages: {_listing(spoken)}"]
        tags = {f"lang:{c}" for c, _ in terr_langs[terr][:3]}
        cur = current_currency.get(terr)
        if cur and cur in en.currencies:
            lines.append(f"Currency: {en.currencies[cur]} ({cur})")
            tags.add(f"cur:{cur}")
        items.append(CldrItem(f"territory:{terr}", "territory", terr, names, "\n".join(lines),
                              frozenset(tags)))

    lang_script: dict[str, str] = {}
    for code in sorted(lang_terrs):
        names = _names(locales, "languages", code)
        sub = likely.get(code, "")
        parts = sub.split("_")
        script = parts[1] if len(parts) > 1 and len(parts[1]) == 4 else None
        where = [mark(en.territories[t], o) for _, t, o in sorted(lang_terrs[code]) if t in en.territories]
        if not ok(names) or "_" in code or not where:
            continue
        lines = [names["en"], f"Language code: {code}"]
        if script and script in en.scripts:
            lines.append(f"Script: {en.scripts[script]}")
            lang_script[code] = script
        lines.append(f"Spoken in: {_listing(where)}")
        tags = {f"ter:{t}" for _, t, _ in sorted(lang_terrs[code])[:4]} | ({f"script:{script}"} if script else set())
        items.append(CldrItem(f"language:{code}", "language", code, names, "\n".join(lines), frozenset(tags)))

    users: dict[str, list[str]] = {}
    for terr, cur in current_currency.items():
        users.setdefault(cur, []).append(terr)
    for cur in sorted(users):
        names = _names(locales, "currencies", cur)
        where = sorted(en.territories[t] for t in users[cur] if t in en.territories)
        if not ok(names) or not where:
            continue
        lines = [names["en"], f"Currency code: {cur}"]
        symbol = en.currency_symbols.get(cur)
        if symbol and symbol != cur:
            lines.append(f"Symbol: {symbol}")
        lines.append(f"Used in: {_listing(where)}")
        tags = {f"lang:{c}" for t in users[cur] for c, _ in terr_langs.get(t, [])[:1]}
        items.append(CldrItem(f"currency:{cur}", "currency", cur, names, "\n".join(lines), frozenset(tags)))

    writers: dict[str, list[str]] = {}
    for code, script in sorted(lang_script.items()):
        writers.setdefault(script, []).append(code)
    for script in sorted(writers):
        names = _names(locales, "scripts", script)
        written = sorted(en.languages[c] for c in writers[script])
        if not ok(names):
            continue
        lines = [names["en"], f"Script code: {script}", f"Used to write: {_listing(written)}"]
        tags = {f"lang:{c}" for c in writers[script]}
        items.append(CldrItem(f"script:{script}", "script", script, names, "\n".join(lines), frozenset(tags)))
    return tuple(sorted(items, key=lambda it: it.key))


def related(item: CldrItem, pool: list[CldrItem]) -> list[CldrItem]:
    """Items of ``pool`` in ``item``'s category, most shared tags first (ties by key), ``item`` excluded."""
    same = [p for p in pool if p.category == item.category and p.key != item.key]
    return sorted(same, key=lambda p: (-len(p.tags & item.tags), p.key))
