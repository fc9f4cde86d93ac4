"""Which installed text the demo corpus reads, and which of it training never sees.

Everything here is text that ``pip install conan-core[demo]`` puts on any machine: docstrings of
the project's own dependencies (and of the ``demo`` extra), gettext catalogs shipped inside
Django, CLDR through babel. With the same package versions the corpus is the same everywhere.

Held-out (out-of-domain) sources are whole sources, never items of a trained source:

* :data:`OOD_DOC_PACKAGES` — every docstring of these packages is kept out of training and makes
  the out-of-domain monolingual retrieval / STS sets (a web framework and a plotting library:
  vocabularies the trained packages — the stdlib, numerics, deep learning — rarely use);
* :data:`OOD_CATALOGS` — these Django apps' translation catalogs make the out-of-domain
  cross-lingual / STS / language-identification sets (other apps' catalogs are trained on);
* :data:`OOD_LANGS` — languages outside RECIPE §6's 26: no training split holds a word of them
  (CLDR and the catalogs are read only in the trained languages). Their queries join the
  out-of-domain cross-lingual set, so its per-language rows show languages never seen. Each is a
  close relative of a trained one (uk~ru, cs~pl, ca~es/fr, id~ms), so transfer is possible.

The choice is declared, not drawn, so every seed evaluates on the same held-out sources and runs
stay comparable; ``demo_summary.json`` lists it with the package versions.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

from conan_core.data.demo_python import DemoSourceError, PyItem, package_items


@dataclass(frozen=True)
class DocPackage:
    """An installed package whose docstrings the demo reads.

    ``name``: import name; ``dist``: distribution name (for its version and the install hint);
    ``parts``: sub-packages read (None = the whole package, ``""`` = its top-level modules only).
    """

    name: str
    dist: str
    parts: tuple[str, ...] | None = None


#: trained docstrings beyond the stdlib: the project's dependencies (pyproject ``dependencies``).
#: torch and transformers are read in their documented user-facing parts only: the rest is
#: compiler / distributed internals (torch) or hundreds of near-identical model files (transformers).
DOC_PACKAGES: tuple[DocPackage, ...] = (
    DocPackage("torch", "torch", ("", "nn", "optim", "distributions", "autograd", "utils", "amp", "sparse",
                                  "masked", "func", "nested")),
    DocPackage("transformers", "transformers", ("", "generation", "pipelines", "data", "utils", "integrations")),
    DocPackage("numpy", "numpy"),
    DocPackage("pydantic", "pydantic"),
    DocPackage("tokenizers", "tokenizers"),
    DocPackage("safetensors", "safetensors"),
    DocPackage("webdataset", "webdataset"),
    DocPackage("tqdm", "tqdm"),
    DocPackage("babel", "babel"),
    DocPackage("yaml", "PyYAML"),
    DocPackage("google.protobuf", "protobuf"),
)
#: held-out docstrings (the ``demo`` extra installs both)
OOD_DOC_PACKAGES: tuple[DocPackage, ...] = (
    DocPackage("django", "Django"),
    DocPackage("matplotlib", "matplotlib"),
)
#: packages whose gettext catalogs are read (catalog roots are named ``django/conf``,
#: ``django/contrib/admin`` ...; see :mod:`conan_core.translators.gettext`)
CATALOG_PACKAGES: tuple[str, ...] = ("django",)
#: held-out catalog roots: six of Django's twelve (the three largest, django/conf, admin and auth,
#: stay in training)
OOD_CATALOGS: tuple[str, ...] = ("django/contrib/admindocs", "django/contrib/flatpages", "django/contrib/gis",
                                 "django/contrib/humanize", "django/contrib/postgres", "django/contrib/redirects")
#: held-out languages (never in any training split)
OOD_LANGS: tuple[str, ...] = ("ca", "cs", "id", "uk")

INSTALL_HINT = "pip install 'conan-core[demo]' (or the package itself)"


def version_of(dist: str) -> str:
    """Installed version of a distribution; a missing one raises :class:`DemoSourceError`."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        raise DemoSourceError(f"the demo corpus reads text shipped with {dist}, which is not installed: "
                              f"{INSTALL_HINT}") from None


def doc_items(packages: tuple[DocPackage, ...]) -> list[PyItem]:
    """Docstring items of ``packages`` (each package's items sorted by key, packages in order)."""
    from conan_core.translators.gettext import CatalogError, package_dir

    out: list[PyItem] = []
    for pkg in packages:
        version_of(pkg.dist)
        try:
            root = package_dir(pkg.name)
        except CatalogError:
            raise DemoSourceError(f"the demo corpus reads the docstrings of {pkg.name} ({pkg.dist}), which is "
                                  f"not importable here: {INSTALL_HINT}") from None
        out.extend(package_items(pkg.name, str(root), pkg.parts))
    return out


def versions() -> dict[str, str]:
    """Distribution -> version of every declared source package (docstrings, catalogs, CLDR)."""
    by_import = metadata.packages_distributions()
    dists = [p.dist for p in DOC_PACKAGES + OOD_DOC_PACKAGES] + ["babel"]
    for name in CATALOG_PACKAGES:
        found = by_import.get(name.split(".")[0])
        if not found:
            raise DemoSourceError(f"the demo corpus reads the gettext catalogs of {name}, which is not "
                                  f"installed: {INSTALL_HINT}")
        dists.append(found[0])
    return {d: version_of(d) for d in sorted(set(dists), key=str.lower)}
