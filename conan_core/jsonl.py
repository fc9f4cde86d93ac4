"""Reading JSONL files with errors that name the file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from conan_core.errors import ConanError


def iter_jsonl(path: str | Path, *, error: type[Exception] = ConanError) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, value)`` for every non-blank line of ``path`` (1-based line numbers).

    A line that is not valid JSON raises ``error("PATH:LINE: invalid JSON (…)")``; the value's type
    is the caller's to check.
    """
    path = Path(path)
    with path.open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            yield lineno, value
