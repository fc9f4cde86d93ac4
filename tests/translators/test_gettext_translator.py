"""The ``gettext`` translator: compiled catalogs shipped inside packages, English as the pivot."""

from __future__ import annotations

import gettext as stdlib_gettext
import struct

import pytest
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo

from conan_core.registries import REGISTRIES
from conan_core.testing import check_component
from conan_core.translators.gettext import (CatalogError, GettextTranslator, catalog_roots, package_dir, read_mo,
                                            select_roots)


def _write_catalog(root, locale: str, entries: list, domain: str = "app") -> None:
    """``entries``: (msgid, msgstr) or (msgid, msgstr, context); a tuple msgid is a plural entry."""
    catalog = Catalog(locale=locale.split("_")[0])
    for entry in entries:
        msgid, msgstr, *ctx = entry
        catalog.add(msgid, msgstr, context=ctx[0] if ctx else None)
    path = root / locale / "LC_MESSAGES"
    path.mkdir(parents=True, exist_ok=True)
    with open(path / f"{domain}.mo", "wb") as fh:
        write_mo(fh, catalog)


@pytest.fixture
def catalogs(tmp_path):
    root = tmp_path / "locale"
    _write_catalog(root, "de", [("Open file", "Datei öffnen"), ("Save", "Speichern"),
                                (("%(n)s file", "%(n)s files"), ("%(n)s Datei", "%(n)s Dateien")),
                                ("May", "Mai", "month name"), ("Copy", "Copy")])
    _write_catalog(root, "fr", [("Open file", "Ouvrir le fichier"), ("Save", "")])
    _write_catalog(root, "zh_Hans", [("Open file", "打开文件")])
    _write_catalog(root, "nb", [("Save", "Lagre")])
    return root


def test_read_mo_matches_the_stdlib_reader(catalogs):
    path = catalogs / "de" / "LC_MESSAGES" / "app.mo"
    entries = read_mo(path)
    assert sorted((e.context, e.msgid, e.msgstr) for e in entries) == [
        ("", "%(n)s file", "%(n)s Datei"), ("", "Copy", "Copy"), ("", "Open file", "Datei öffnen"),
        ("", "Save", "Speichern"), ("month name", "May", "Mai")]
    with open(path, "rb") as fh:
        reference = stdlib_gettext.GNUTranslations(fh)
    assert reference.gettext("Open file") == "Datei öffnen" and reference.pgettext("month name", "May") == "Mai"
    # untranslated entries ("Save" in French) are not entries
    assert [e.msgid for e in read_mo(catalogs / "fr" / "LC_MESSAGES" / "app.mo")] == ["Open file"]


def test_big_endian_catalog(catalogs, tmp_path):
    little = (catalogs / "de" / "LC_MESSAGES" / "app.mo").read_bytes()
    n = struct.unpack("<7I", little[:28])
    # re-encode every header and table word big-endian; the strings stay where they are
    count, orig, trans = n[2], n[3], n[4]
    words = {0, 4, 8, 12, 16, 20, 24} | {t + 4 * i for t in (orig, trans) for i in range(2 * count)}
    big = bytearray(little)
    for at in words:
        big[at:at + 4] = struct.pack(">I", struct.unpack("<I", little[at:at + 4])[0])
    path = tmp_path / "big.mo"
    path.write_bytes(bytes(big))
    assert read_mo(path) == read_mo(catalogs / "de" / "LC_MESSAGES" / "app.mo")


def test_bad_catalogs_name_the_file(tmp_path, catalogs):
    bad = tmp_path / "bad.mo"
    bad.write_bytes(b"\x00" * 40)
    with pytest.raises(CatalogError, match=rf"{bad}: not a gettext .mo file \(magic"):
        read_mo(bad)
    short = tmp_path / "short.mo"
    short.write_bytes(b"\xde\x12\x04\x95")
    with pytest.raises(CatalogError, match="only 4 bytes"):
        read_mo(short)
    cut = tmp_path / "cut.mo"
    cut.write_bytes((catalogs / "de" / "LC_MESSAGES" / "app.mo").read_bytes()[:120])
    with pytest.raises(CatalogError, match=rf"{cut}: .*outside the file \(truncated catalog\?\)"):
        read_mo(cut)
    with pytest.raises(CatalogError, match="no gettext catalogs here"):
        GettextTranslator(GettextTranslator.Config(packages=[], paths=[str(tmp_path / "empty")]))


def test_translate_from_a_catalog_directory(catalogs):
    tr = GettextTranslator(GettextTranslator.Config(packages=[], paths=[str(catalogs)]))
    assert tr.translate(["Open file", "Save", "Unknown"], "en", "de") == ["Datei öffnen", "Speichern", None]
    assert tr.translate(["Datei öffnen"], "de", "fr") == ["Ouvrir le fichier"]  # through English
    assert tr.translate(["Open file"], "en", "zh") == ["打开文件"]  # zh_Hans is zh
    assert tr.translate(["Save"], "en", "no") == ["Lagre"]  # nb is no
    assert tr.translate(["Save"], "en", "fr") == [None]  # untranslated in the catalog
    assert tr.translate(["Copy"], "en", "de") == [None]  # a copied source string is no translation
    assert tr.translate(["%(n)s file", "may"], "en", "de") == ["%(n)s Datei", "Mai"]  # plural, context
    assert tr.languages() == {"en", "de", "fr", "zh", "no"}
    only_fr = GettextTranslator(GettextTranslator.Config(packages=[], paths=[str(catalogs)], languages=["fr"]))
    assert only_fr.languages() == {"en", "fr"}


def test_django_catalogs_and_root_selection():
    names = [r.name for r in catalog_roots("django")]
    assert "django/conf" in names and "django/contrib/admin" in names and names == sorted(names)
    tr = REGISTRIES["translators"].build({"type": "gettext", "include": ["django/conf"], "languages": ["de", "ja"]})
    assert isinstance(tr, GettextTranslator) and [r.name for r in tr.roots] == ["django/conf"]
    de = tr.translate(["Enter a valid email address."], "en", "de")[0]
    assert de and de != "Enter a valid email address."
    assert tr.translate([de], "de", "en") == ["Enter a valid email address."]
    assert tr.translate([de], "de", "ja")[0]  # German -> English -> Japanese
    without = GettextTranslator(GettextTranslator.Config(exclude=["django/conf"], languages=["de"]))
    assert "django/conf" not in [r.name for r in without.roots]
    with pytest.raises(CatalogError, match=r"include: no catalog root named \['django/nope'\]; known:"):
        select_roots(["django"], [], ["django/nope"], [])
    with pytest.raises(CatalogError, match="'not_installed_pkg' is not installed.*pip install not_installed_pkg"):
        package_dir("not_installed_pkg")


def test_conformance():
    check_component("translators", "gettext")
