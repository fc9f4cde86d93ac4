"""Real parallel sentences of the demo corpus: gettext catalogs shipped inside installed packages.

Django ships, for each of its apps, ``locale/<lang>/LC_MESSAGES/django.mo`` in about 100
languages: every user-visible English string (``msgid``) with its human translation. Each
distinct English string becomes one :class:`Message` with its translations in the requested
languages; the English string is the document a query in any language must retrieve (translation
retrieval, as in bitext-mining benchmarks). Reading goes through
:mod:`conan_core.translators.gettext`, the same code as the ``gettext`` translator.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field
from typing import Iterable

from conan_core.data.demo_python import usable_text
from conan_core.translators.gettext import select_roots

#: a message is kept when it has a translation in at least this many requested languages
MIN_LANGS = 13
_WORD = re.compile(r"[^\W\d_]{3,}", re.UNICODE)
#: printf / format placeholders (``%(name)s``, ``%s``, ``{}``, ``{name}``): not words of the message
_PLACEHOLDER = re.compile(r"%\(\w+\)[a-z]|%[a-z]|\{\w*\}")
#: words too common in interface strings to make two messages related
_STOP = frozenset({"the", "and", "for", "this", "that", "with", "you", "your", "are", "not", "was", "from",
                   "has", "have", "can", "will", "all", "its", "any", "must", "been", "into", "than"})


@dataclass(frozen=True)
class Message:
    """One English interface string and its translations.

    ``key``: ``message:<12 hex of sha256(English)>``; ``category``: the catalog root it was first
    found in (``django/contrib/admin``); ``names``: language code -> text (``en`` is the msgid);
    ``doc``: the English text (the retrieval document); ``tags``: its content words, lower-cased
    (messages sharing tags are related, see :func:`conan_core.data.demo_cldr.related`).
    """

    key: str
    category: str
    names: dict[str, str] = field(hash=False)
    doc: str = field(hash=False)
    tags: frozenset[str] = field(hash=False)

    @property
    def en(self) -> str:
        return self.names["en"]


def content_words(text: str) -> frozenset[str]:
    """Lower-cased words of three letters or more, minus a few function words."""
    return frozenset(w for w in (m.group().lower() for m in _WORD.finditer(text)) if w not in _STOP)


def has_words(text: str) -> bool:
    """True when ``text`` holds a word of three letters or more outside its placeholders (``{}rd``,
    ``%(value)s`` alone are not sentences anyone would search for)."""
    return bool(_WORD.search(_PLACEHOLDER.sub(" ", text)))


def messages(packages: Iterable[str], include: Iterable[str] | None, exclude: Iterable[str],
             langs: Iterable[str], min_langs: int = MIN_LANGS) -> list[Message]:
    """Messages of the selected catalog roots in ``langs`` (``en`` implied), sorted by key.

    An English string without a word outside its placeholders is left out, and so is a translation
    identical to its English string (an untranslated copy) or holding control characters; an English string found in several roots belongs to the first root by
    name; a message needs translations in at least ``min(min_langs, len(langs) - 1)`` languages.
    """
    return list(_messages(tuple(packages), None if include is None else tuple(sorted(include)),
                          tuple(sorted(exclude)), tuple(sorted(set(langs) - {"en"})), min_langs))


@functools.lru_cache(maxsize=8)
def _messages(packages: tuple[str, ...], include: tuple[str, ...] | None, exclude: tuple[str, ...],
              langs: tuple[str, ...], min_langs: int) -> tuple[Message, ...]:
    roots = select_roots(list(packages), [], None if include is None else list(include), list(exclude))
    found: dict[str, tuple[str, dict[str, str]]] = {}  # English -> (root name, translations)
    for root in sorted(roots, key=lambda r: r.name):
        available = root.languages()
        for lang in langs:
            if lang not in available:
                continue
            for entry in root.entries(lang):
                en = " ".join(entry.msgid.split())
                text = " ".join(entry.msgstr.split())
                if (not (usable_text(en) and usable_text(text) and has_words(en))
                        or text.casefold() == en.casefold()):
                    continue
                owner, names = found.setdefault(en, (root.name, {}))
                if owner == root.name:
                    names.setdefault(lang, text)
    need = min(min_langs, len(langs))
    out = []
    for en, (category, names) in found.items():
        if len(names) < need:
            continue
        key = "message:" + hashlib.sha256(en.encode()).hexdigest()[:12]
        out.append(Message(key, category, {"en": en, **dict(sorted(names.items()))}, en, content_words(en)))
    return tuple(sorted(out, key=lambda m: m.key))
