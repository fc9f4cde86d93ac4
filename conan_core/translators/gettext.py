"""``gettext``: translation by lookup in the compiled gettext catalogs (``.mo``) that installed
packages ship, e.g. Django's ``locale/<lang>/LC_MESSAGES/django.mo`` in about 100 languages.

A catalog pairs each English source string (``msgid``) with its human translation (``msgstr``):
real parallel text that ``pip install`` puts on any machine. Nothing is downloaded and no model
runs. English is the pivot, as in :mod:`conan_core.translators.lookup`.

Layout read: a *catalog root* is a directory named ``locale`` holding ``<locale>/LC_MESSAGES/*.mo``
(Django: ``django/conf/locale``, ``django/contrib/admin/locale`` ...). A catalog root is named
``<package>/<path of its parent inside the package>`` (``django/conf``, ``django/contrib/admin``);
``include`` / ``exclude`` select roots by those names. Locale directory names become language
codes through :data:`LOCALE_ALIASES` (``zh_Hans`` -> ``zh``, ``nb`` -> ``no``); other names are kept
as they are (``pt_BR``).

Entries: the header (empty msgid) and untranslated entries are skipped; a plural entry
contributes its singular msgid and its first translated form; a context (``msgctxt``) is not part
of the text. ``.mo`` files never hold fuzzy entries (``msgfmt`` leaves them out).
"""

from __future__ import annotations

import importlib.util
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from conan_core.errors import ConanError
from conan_core.registry import ComponentConfig
from conan_core.translators.base import Translator
from conan_core.translators.lookup import ParallelTable

#: gettext locale directory names -> RECIPE §6 language codes
LOCALE_ALIASES = {"zh_Hans": "zh", "nb": "no"}
_MAGIC_LE = 0x950412DE
_CHARSET = re.compile(r"charset=([\w.-]+)", re.IGNORECASE)


class CatalogError(ConanError, ValueError):
    """A gettext catalog is missing, unreadable or malformed (the message names the file)."""


@dataclass(frozen=True)
class Entry:
    """One translated catalog entry: ``context`` ("" when none), English ``msgid``, ``msgstr``."""

    context: str
    msgid: str
    msgstr: str


class CatalogRoot:
    """A ``locale`` directory of a package: ``name`` (``django/contrib/admin``) and its ``path``."""

    def __init__(self, name: str, path: Path):
        self.name, self.path = name, Path(path)
        self._languages: dict[str, Path] | None = None

    def __repr__(self) -> str:
        return f"CatalogRoot({self.name!r}, {str(self.path)!r})"

    def languages(self) -> dict[str, Path]:
        """Language code -> locale directory, for every locale that has an ``LC_MESSAGES/*.mo``
        (sorted by directory name; when two directories alias to one code the first wins)."""
        if self._languages is None:
            out: dict[str, Path] = {}
            for sub in sorted(p for p in self.path.iterdir() if p.is_dir()):
                if any((sub / "LC_MESSAGES").glob("*.mo")):
                    out.setdefault(LOCALE_ALIASES.get(sub.name, sub.name), sub)
            self._languages = out
        return self._languages

    def entries(self, lang: str) -> list[Entry]:
        """Entries of every ``.mo`` of ``lang`` in this root (files in name order); [] when absent."""
        sub = self.languages().get(lang)
        if sub is None:
            return []
        out: list[Entry] = []
        for mo in sorted((sub / "LC_MESSAGES").glob("*.mo")):
            out.extend(read_mo(mo))
        return out


def read_mo(path: str | Path) -> list[Entry]:
    """The translated entries of a compiled gettext catalog, in file order (sorted by msgid).

    Follows the GNU ``.mo`` layout: magic, revision, count, offsets of the original and
    translation tables, each a list of (length, offset) pairs. Strings are decoded with the
    header's charset (UTF-8 when it names none). A bad magic number, a table or string outside the
    file, or undecodable bytes raise :class:`CatalogError` naming the file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read gettext catalog ({exc})") from None
    if len(data) < 28:
        raise CatalogError(f"{path}: not a gettext .mo file (only {len(data)} bytes)")
    magic = struct.unpack("<I", data[:4])[0]
    order = "<" if magic == _MAGIC_LE else ">" if struct.unpack(">I", data[:4])[0] == _MAGIC_LE else None
    if order is None:
        raise CatalogError(f"{path}: not a gettext .mo file (magic number {magic:#x})")
    _revision, count, orig_at, trans_at = struct.unpack(order + "4I", data[4:20])

    def table(at: int, i: int) -> bytes:
        start = at + 8 * i
        if start + 8 > len(data):
            raise CatalogError(f"{path}: string table entry {i} lies outside the file (truncated catalog?)")
        length, offset = struct.unpack(order + "2I", data[start:start + 8])
        if offset + length > len(data):
            raise CatalogError(f"{path}: string {i} lies outside the file (truncated catalog?)")
        return data[offset:offset + length]

    raw = [(table(orig_at, i), table(trans_at, i)) for i in range(count)]
    charset = "utf-8"
    for msgid, msgstr in raw:
        if msgid == b"":
            found = _CHARSET.search(msgstr.decode("ascii", errors="replace"))
            if found and found.group(1).lower() != "charset":
                charset = found.group(1)
    out = []
    for i, (msgid_b, msgstr_b) in enumerate(raw):
        if not msgid_b:
            continue  # the header entry
        try:
            msgid, msgstr = msgid_b.decode(charset), msgstr_b.decode(charset)
        except (UnicodeDecodeError, LookupError) as exc:
            raise CatalogError(f"{path}: entry {i} is not valid {charset} ({exc})") from None
        context, sep, msgid = msgid.rpartition("\x04")
        msgid = msgid.split("\x00", 1)[0]  # plural entries: the singular form
        msgstr = msgstr.split("\x00", 1)[0]  # and the first translated form
        if msgid.strip() and msgstr.strip():
            out.append(Entry(context if sep else "", msgid, msgstr))
    return out


def package_dir(package: str) -> Path:
    """Directory of an installed package (import name, e.g. ``django``), without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise CatalogError(f"package {package!r} is not installed (or is not a package); the gettext "
                           f"translator reads its catalogs: pip install {package} "
                           "(Django comes with conan-core[demo])")
    return Path(next(iter(spec.submodule_search_locations)))


def catalog_roots(package: str) -> list[CatalogRoot]:
    """Every ``locale`` directory under an installed package, sorted by name."""
    root = package_dir(package)
    found = []
    for loc in sorted(root.rglob("locale")):
        if loc.is_dir() and any(loc.glob("*/LC_MESSAGES/*.mo")):
            rel = loc.parent.relative_to(root).as_posix()
            found.append(CatalogRoot(package if rel == "." else f"{package}/{rel}", loc))
    return found


def directory_root(path: str | Path) -> CatalogRoot:
    """A catalog root given as a directory (``<dir>/<locale>/LC_MESSAGES/*.mo``); named by its path."""
    path = Path(path)
    if not path.is_dir() or not any(path.glob("*/LC_MESSAGES/*.mo")):
        raise CatalogError(f"{path}: no gettext catalogs here; expected <locale>/LC_MESSAGES/*.mo under it")
    return CatalogRoot(path.as_posix(), path)


def select_roots(packages: list[str], paths: list[str], include: list[str] | None,
                 exclude: list[str]) -> list[CatalogRoot]:
    """Catalog roots of ``packages`` then ``paths``, filtered by name (``include`` None = all).

    A name in ``include`` or ``exclude`` that matches no root raises, so a typo never silently
    changes the data.
    """
    roots = [r for p in packages for r in catalog_roots(p)] + [directory_root(p) for p in paths]
    names = {r.name for r in roots}
    for field, wanted in (("include", include or []), ("exclude", exclude)):
        unknown = sorted(set(wanted) - names)
        if unknown:
            raise CatalogError(f"gettext {field}: no catalog root named {unknown}; known: {sorted(names)}")
    return [r for r in roots if (include is None or r.name in include) and r.name not in exclude]


class GettextTranslator(Translator):
    """Translate by lookup in gettext catalogs shipped inside installed packages (no network).

    Every selected catalog root contributes, for each language, its (msgid -> msgstr) entries;
    X→Y goes through English. When a text has several translations (several catalogs or
    contexts) the first wins, in root-name then file order, so the result is deterministic for
    fixed package versions. ``languages`` restricts the languages loaded (None = all).
    """

    class Config(ComponentConfig):
        packages: list[str] = Field(default_factory=lambda: ["django"],
                                    description="installed packages whose locale/<lang>/LC_MESSAGES/*.mo are read")
        paths: list[str] = Field(default_factory=list,
                                 description="extra catalog roots: directories holding <lang>/LC_MESSAGES/*.mo")
        include: list[str] | None = Field(None, description="catalog roots to read, by name "
                                          "(django/conf, django/contrib/admin, ...); None = all")
        exclude: list[str] = Field(default_factory=list, description="catalog roots to skip, by name")
        languages: list[str] | None = Field(None, description="language codes to load (None = every one found)")
        normalize: bool = Field(True, description="match keys after NFC, whitespace collapsing and casefolding")

    def __init__(self, config: Config, **runtime):
        self.config = config
        self.table = ParallelTable(config.normalize)
        self.roots = select_roots(config.packages, config.paths, config.include, config.exclude)
        wanted = None if config.languages is None else set(config.languages)
        for root in self.roots:
            for lang in root.languages():
                if lang == "en" or (wanted is not None and lang not in wanted):
                    continue
                for entry in root.entries(lang):
                    if entry.msgstr != entry.msgid:  # a copied source string is no translation
                        self.table.add(lang, entry.msgstr, entry.msgid)

    def languages(self) -> set[str]:
        return self.table.languages()

    def translate(self, texts: list[str], src_lang: str, tgt_lang: str) -> list[str | None]:
        """One entry per text: its catalog translation into ``tgt_lang``, or None when unknown."""
        return self.table.translate(texts, src_lang, tgt_lang)
