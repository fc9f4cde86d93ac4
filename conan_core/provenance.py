"""Where a run came from: ``RUN/provenance.json``, written once when the run directory is created.

It records what the config file cannot: the command line, the preset the config starts from and
the ``--set`` overrides (:func:`conan_core.config.config_origin`), the versions of conan-core, its
main dependencies and the installed plugin distributions (with the plugin keys the config uses),
and the git commit of the conan_core source when it is a git checkout. ``report.md`` opens with
it, together with the config's difference from its preset.
"""

from __future__ import annotations

import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

FILE = "provenance.json"
#: distributions whose versions every report states (when installed)
LIBRARIES = ("conan-core", "torch", "transformers", "tokenizers", "datasets", "tensorboard", "wandb")


def versions() -> dict[str, str]:
    """``{distribution: version}`` of :data:`LIBRARIES` that are installed, plus ``python``."""
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def plugins() -> list[str]:
    """``"name version"`` of every plugin distribution that registers a conan_core key."""
    from conan_core.registries import REGISTRIES

    found = set()
    for kind in REGISTRIES:
        reg = REGISTRIES[kind]
        for key in reg.keys():
            origin = reg.origin(key)
            if origin.startswith("plugin "):
                found.add(origin[len("plugin "):])
    return sorted(found)


def plugin_keys(resolved: Any) -> list[str]:
    """The plugin keys (``namespace/name``) a resolved config names, anywhere in it."""
    keys: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            value = node.get("type")
            if isinstance(value, str) and "/" in value:
                keys.add(value)
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(resolved)
    return sorted(keys)


def git_commit(path: Path | None = None) -> dict | None:
    """``{"commit", "dirty"}`` of the git checkout holding ``path`` (default: the conan_core
    source), or None when it is not one or git is unavailable."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def collect(cfg: Any, command: str | None = None) -> dict:
    """The provenance of a run of ``cfg`` started now by ``command`` (see the module docstring)."""
    from conan_core.config import config_origin, resolve
    from conan_core.rundir import current_command

    origin = config_origin(cfg) or {"config": None, "preset": None, "overrides": []}
    return {"command": command or current_command(), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "config": origin["config"], "preset": origin["preset"], "overrides": origin["overrides"],
            "versions": versions(), "plugins": plugins(), "plugin_keys": plugin_keys(resolve(cfg)),
            "git": git_commit()}


def write_once(cfg: Any, run_dir: str | Path) -> Path:
    """``RUN/provenance.json`` for a new run (an existing one is kept: it describes how the run was
    started, and a resume must use the same config anyway)."""
    from conan_core.fsio import atomic_write_json

    path = Path(run_dir) / FILE
    if not path.is_file():
        atomic_write_json(path, collect(cfg))
    return path


def read(run_dir: str | Path) -> dict | None:
    """The run's provenance, or None for a run written before it existed."""
    import json

    path = Path(run_dir) / FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def config_diff(cfg: Any, preset: str | None) -> list[tuple[str, Any, Any]]:
    """``(dotted path, preset value, this run's value)`` for every field where the resolved ``cfg``
    differs from the resolved ``preset`` (from the defaults of every field when None)."""
    import json

    from conan_core.config import RunConfig, load_config, resolve

    base = resolve(load_config(preset)) if preset else resolve(RunConfig())
    mine = resolve(cfg)
    out: list[tuple[str, Any, Any]] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in list(a) + [k for k in b if k not in a]:
                walk(a.get(key), b.get(key), f"{path}.{key}" if path else key)
        elif json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            out.append((path, a, b))

    walk(base, mine, "")
    return out
