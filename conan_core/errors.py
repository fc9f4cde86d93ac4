"""conan_core's user-facing error types (printed without a traceback by the CLI).

Kept free of heavy imports (no pydantic, no torch) so any module can raise them. Exit codes: the
CLI maps each family to its own code (see :data:`EXIT_CODES` and ``conan --help``).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Iterable


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


class PluginError(ConanError, ImportError):
    """A plugin key that exists but is broken (import failed, collision, wrong base class)."""

    exit_code = 2


def close_matches(word: str, options: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` entries of ``options`` that look like ``word`` (for "did you mean" hints)."""
    return difflib.get_close_matches(str(word), list(options), n=n, cutoff=0.5)
