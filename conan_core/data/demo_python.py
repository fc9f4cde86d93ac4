"""Real English text of the demo corpus: Python documentation that is installed on the machine.

Sources (nothing is downloaded, nothing is invented):

* docstrings of the standard library: pure-Python modules are parsed with :mod:`ast` (no module is
  imported, so nothing runs), C modules in :data:`C_MODULES` are read with :mod:`inspect`;
* ``pydoc_data.topics``: the language-reference topics that ``help("TOPIC")`` prints;
* docstrings of installed packages (:func:`package_items`), parsed with :mod:`ast` like the
  stdlib; which packages the demo reads is declared in :mod:`conan_core.data.demo_sources`.

Items are sorted by key, so the result depends only on the Python and package versions.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from conan_core.errors import ConanError

#: stdlib directories never read: tests, GUI code, vendored tools, compiled extension folders.
SKIP_DIRS = frozenset({"test", "tests", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip",
                       "site-packages", "dist-packages", "__pycache__", "pydoc_data", "venv",
                       # generated codec tables: near-identical boilerplate docstrings
                       "encodings"})
#: C modules whose documented public callables and classes are read with ``inspect``.
C_MODULES = ("builtins", "math", "cmath", "itertools", "time", "binascii", "zlib", "unicodedata", "array")
#: package directories never read: tests, vendored code, data and templates
PACKAGE_SKIP_DIRS = frozenset({"test", "tests", "testing", "_tests", "__pycache__", "benchmarks", "examples",
                               "_vendor", "vendor", "_vendored", "locale", "templates", "static", "migrations"})
#: docstrings shorter than this (characters) carry too little text to be useful.
MIN_DOC_CHARS = 40
#: docs used as documents are cut to at most this many characters (at a paragraph end if possible).
MAX_DOC_CHARS = 1500

class DemoSourceError(ConanError):
    """A source the demo corpus is declared to read is missing (the message says how to install it)."""


_BAD_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")


@dataclass(frozen=True)
class PyItem:
    """One documented standard-library object.

    ``key``: full dotted name (``json.dumps``, ``collections.OrderedDict.popitem``); ``module``:
    dotted module; ``top``: first component of ``module``; ``owner``: enclosing class path
    (``""`` for module-level objects); ``kind``: module | class | function | method;
    ``signature``: name with its parameter list as written in the source; ``doc``: the cleaned
    docstring (``inspect.cleandoc``); ``source``: ``"stdlib"`` or the package the item comes
    from (then ``top`` is that package's import name, e.g. ``torch`` or ``google.protobuf``).
    """

    key: str
    module: str
    top: str
    owner: str
    name: str
    kind: str
    signature: str
    doc: str
    source: str = "stdlib"

    @property
    def summary(self) -> str:
        """The first paragraph of the docstring on one line."""
        return " ".join(self.doc.split("\n\n", 1)[0].split())

    @property
    def body(self) -> str:
        """The docstring after its first paragraph ("" when it has one paragraph)."""
        parts = self.doc.split("\n\n", 1)
        return parts[1].strip() if len(parts) > 1 else ""

    def document(self, with_summary: bool = True) -> str:
        """The signature line then the docstring (or only its body), cut to MAX_DOC_CHARS."""
        text = self.doc if with_summary else self.body
        return f"{self.signature}\n\n{cut(text, MAX_DOC_CHARS)}"


def cut(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, at a paragraph or word end when possible."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    for sep in ("\n\n", "\n", " "):
        at = head.rfind(sep)
        if at > limit // 2:
            return head[:at].rstrip()
    return head


def usable(doc: str | None) -> bool:
    """True when ``doc`` is long enough and holds no control character other than tab/newline
    and no surrogate (shards reject those)."""
    return bool(doc) and len(doc) >= MIN_DOC_CHARS and not _BAD_CHARS.search(doc)


def usable_text(text: str) -> bool:
    """True when ``text`` holds a letter and no character the shards reject (control characters
    other than tab/newline, surrogates)."""
    return any(c.isalpha() for c in text) and not _BAD_CHARS.search(text)


def stdlib_root() -> Path:
    """Directory of the running interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def _module_files(root: Path) -> list[tuple[str, Path]]:
    """(dotted module name, file) for public pure-Python stdlib modules, sorted by name."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        # a package is public when every path component is public and it has an __init__.py
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith(("_", "config-"))
                             and (Path(dirpath, d, "__init__.py").is_file()))
        for fn in sorted(filenames):
            if not fn.endswith(".py") or (fn.startswith("_") and fn != "__init__.py"):
                continue
            parts = list(rel.parts) + ([] if fn == "__init__.py" else [fn[:-3]])
            if parts:
                out.append((".".join(parts), Path(dirpath, fn)))
    out.sort()
    return out


def _walk(node: ast.AST, module: str, owner: str, out: list[PyItem], top: str | None = None,
          source: str = "stdlib") -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if child.name.startswith("_"):
                continue
            path = f"{owner}.{child.name}" if owner else child.name
            doc = ast.get_docstring(child)
            if isinstance(child, ast.ClassDef):
                kind, sig = "class", f"{module}.{path}"
                bases = ", ".join(ast.unparse(b) for b in child.bases)
                if bases:
                    sig += f"({bases})"
            else:
                kind = "method" if owner else "function"
                sig = f"{module}.{path}({ast.unparse(child.args)})"
            if usable(doc):
                out.append(PyItem(f"{module}.{path}", module, top or module.split(".")[0], owner, child.name,
                                  kind, sig, doc, source))
            if isinstance(child, ast.ClassDef):
                _walk(child, module, path, out, top, source)


def _source_items(root: Path) -> list[PyItem]:
    items: list[PyItem] = []
    for module, path in _module_files(root):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue  # a file the running parser cannot read (vendored py2 code): not documentation
        doc = ast.get_docstring(tree)
        if usable(doc):
            items.append(PyItem(module, module, module.split(".")[0], "", module.rsplit(".", 1)[-1],
                                "module", module, doc))
        _walk(tree, module, "", items)
    return items


def _c_items() -> list[PyItem]:
    import importlib
    import inspect

    items = []
    for modname in C_MODULES:
        mod = importlib.import_module(modname)
        for name in sorted(vars(mod)):
            obj = getattr(mod, name)
            if name.startswith("_") or getattr(obj, "__module__", None) != modname:
                continue
            if not (inspect.isbuiltin(obj) or inspect.isclass(obj)):
                continue
            members = [(name, "", obj)]
            if inspect.isclass(obj):
                members += [(f"{name}.{m}", name, getattr(obj, m)) for m in sorted(vars(obj))
                            if not m.startswith("_") and callable(getattr(obj, m, None))]
            for path, owner, member in members:
                doc = inspect.getdoc(member)
                if not usable(doc):
                    continue
                try:
                    sig = f"{modname}.{path}{inspect.signature(member)}"
                except (TypeError, ValueError):
                    sig = f"{modname}.{path}"
                kind = "class" if inspect.isclass(member) else ("method" if owner else "function")
                items.append(PyItem(f"{modname}.{path}", modname, modname, owner, path.rsplit(".", 1)[-1],
                                    kind, sig, doc))
    return items


@functools.lru_cache(maxsize=1)
def python_items() -> tuple[PyItem, ...]:
    """Every usable documented public stdlib object, one per distinct docstring, sorted by key.

    Cached per process (parsing the stdlib takes seconds; the result never changes while the
    interpreter runs).

    When several objects share the same docstring text (aliases, re-exports), only the first by
    key is kept, so no text can sit on both sides of the train/eval split.
    """
    return distinct_items(_source_items(stdlib_root()) + _c_items())


def _package_files(package: str, root: Path, parts: tuple[str, ...] | None) -> list[tuple[str, Path]]:
    """(dotted module, file) of ``package`` (rooted at ``root``), sorted by module name.

    ``parts`` None reads the whole package; otherwise each entry is a sub-package walked
    recursively (``"nn"``, ``"utils.data"``) and ``""`` stands for the package's own top-level
    modules. Private modules are read (many packages keep their documented implementation in
    ``_core``-style modules and re-export it); private objects are not (see :func:`_walk`).
    """
    walks = [("", True)] if parts is None else [(p, bool(p)) for p in parts]
    out: dict[str, Path] = {}
    for part, recursive in walks:
        start = root.joinpath(*part.split(".")) if part else root
        if not (start / "__init__.py").is_file():
            raise DemoSourceError(f"{package}.{part} is not a package under {root}: the installed {package} "
                                  "differs from the one the demo corpus declares")
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = sorted(d for d in dirnames if recursive and d not in PACKAGE_SKIP_DIRS
                                 and Path(dirpath, d, "__init__.py").is_file())
            rel = Path(dirpath).relative_to(root)
            for fn in sorted(filenames):
                if fn.endswith(".py"):
                    names = list(rel.parts) + ([] if fn == "__init__.py" else [fn[:-3]])
                    out[".".join([package, *names])] = Path(dirpath, fn)
    return sorted(out.items())


@functools.lru_cache(maxsize=None)
def package_items(package: str, root: str, parts: tuple[str, ...] | None = None) -> tuple[PyItem, ...]:
    """Documented public objects of the installed package ``package`` whose directory is ``root``,
    one per distinct docstring, sorted by key (see :func:`_package_files` for ``parts``).

    Nothing is imported: files are parsed with :mod:`ast`. A file the running parser cannot read
    is left out (it holds no documentation this Python can see). Cached per process.
    """
    items: list[PyItem] = []
    for module, path in _package_files(package, Path(root), parts):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        doc = ast.get_docstring(tree)
        if usable(doc):
            items.append(PyItem(module, module, package, "", module.rsplit(".", 1)[-1], "module", module, doc,
                                package))
        _walk(tree, module, "", items, package, package)
    return distinct_items(items)


def distinct_items(items: list[PyItem]) -> tuple[PyItem, ...]:
    """``items`` sorted by key, keeping the first of each docstring text and of each key."""
    seen_doc: set[str] = set()
    seen_key: set[str] = set()
    out = []
    for it in sorted(items, key=lambda it: it.key):
        if it.doc in seen_doc or it.key in seen_key:
            continue
        seen_doc.add(it.doc)
        seen_key.add(it.key)
        out.append(it)
    return tuple(out)


def pydoc_topics() -> list[tuple[str, str]]:
    """(topic name, text) of the Python language reference as ``help()`` shows it, sorted."""
    from pydoc_data.topics import topics

    return [(name, text.strip()) for name, text in sorted(topics.items())
            if usable(text.strip())]


def paragraphs_chunks(text: str, limit: int = MAX_DOC_CHARS) -> list[str]:
    """``text`` as consecutive chunks of whole paragraphs, each at most ``limit`` characters
    (a longer paragraph is cut with :func:`cut` and its rest dropped)."""
    chunks, buf = [], ""
    for para in text.split("\n\n"):
        para = para.strip("\n")
        if not para.strip():
            continue
        para = cut(para, limit)
        if buf and len(buf) + 2 + len(para) > limit:
            chunks.append(buf)
            buf = ""
        buf = f"{buf}\n\n{para}" if buf else para
    if buf:
        chunks.append(buf)
    return chunks
