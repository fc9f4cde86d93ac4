"""Reading JSONL files with errors that name the file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from conan_core.errors import ConanError


def iter_jsonl(path: str | Path, *, error: type[Exception] = ConanError) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, value)`` for every non-blank line of ``path`` (1-based line numbers).

    A line that is not UTF-8 raises ``error("PATH:LINE: not valid UTF-8 (…)")`` and one that is not
    valid JSON ``error("PATH:LINE: invalid JSON (…)")``; the value's type is the caller's to check.
    """
    path = Path(path)
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = decode_line(path, lineno, raw, error=error)
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            yield lineno, value


def decode_line(path: Path, lineno: int, raw: bytes, *, error: type[Exception] = ConanError) -> str:
    """``raw`` (one line of ``path``) as text; bytes that are not UTF-8 raise ``error`` naming the
    file, line, column and the offending bytes."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start:exc.end]
        raise error(
            f"{path}:{lineno}: not valid UTF-8 (byte {bad[:4].hex(' ')} at column {exc.start + 1}); "
            "convert the file to UTF-8 (e.g. `iconv -f latin1 -t utf-8 IN > OUT`) or fix that line") from None
