"""conan_core's user-facing error types (printed without a traceback by the CLI).

Kept free of heavy imports (no pydantic, no torch) so any module can raise them. Each family has
its own process exit code (``exit_code``), listed in :data:`EXIT_CODES` and by ``conan --help``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Iterable

#: the ``conan`` command's exit codes (also printed by ``conan --help``)
EXIT_CODES = {
    0: "success",
    1: "error (the message says what and how to fix it)",
    2: "invalid config, command line or plugin",
    3: "bad input data (the file, line or sample is named)",
    4: "storage: disk full, read-only or permission denied (the path is named)",
    5: "non-finite loss or weights (training stopped before marking anything done)",
    6: "the run directory is locked by another process (its pid and command are named)",
    7: "a checkpoint file was refused as unsafe to load",
    75: "preempted (SIGTERM): a checkpoint is committed; re-run the same command to resume",
    130: "interrupted (Ctrl-C): re-run the printed command to resume",
}
PREEMPTED_EXIT = 75


@dataclass
class ConfigIssue:
    """One problem in a config: where (dotted path), what, the value, and hints."""

    path: str
    message: str
    value: Any = None
    suggestions: list[str] = field(default_factory=list)
    valid: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = f"{self.path or '<root>'}: {self.message}"
        if self.value is not None:
            text += f" (got {self.value!r})"
        if self.suggestions:
            text += "; did you mean " + ", ".join(repr(s) for s in self.suggestions) + "?"
        if self.valid:
            text += "; valid: " + ", ".join(self.valid)
        return text


class ConanError(Exception):
    """Base of conan_core's user-facing errors (printed without a traceback by the CLI)."""

    exit_code = 1


class ConfigError(ConanError, ValueError):
    """A config is invalid. ``issues`` lists every problem found, each with its path."""

    exit_code = 2

    def __init__(self, issues: list[ConfigIssue], source: str | None = None):
        self.issues = list(issues)
        self.source = source
        head = f"{len(self.issues)} config error(s)" + (f" in {source}" if source else "")
        super().__init__(head + ":\n" + "\n".join(f"  - {i}" for i in self.issues))


class UnknownKeyError(ConfigError, KeyError):
    """A registry key that does not exist."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class DataError(ConanError, ValueError):
    """Bad input data; the message names the file, line or sample key."""

    exit_code = 3


class StorageError(ConanError):
    """A write failed for lack of space or permission (the message names the path)."""

    exit_code = 4


class PreemptedError(ConanError):
    """Work stopped on SIGTERM after committing its state; the same command resumes it."""

    exit_code = PREEMPTED_EXIT


class PluginError(ConanError, ImportError):
    """A plugin key that exists but is broken (import failed, collision, wrong base class)."""

    exit_code = 2


def close_matches(word: str, options: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` entries of ``options`` that look like ``word`` (for "did you mean" hints)."""
    return difflib.get_close_matches(str(word), list(options), n=n, cutoff=0.5)
