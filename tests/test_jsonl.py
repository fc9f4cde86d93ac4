"""conan_core.jsonl: every JSONL reader of the library names the file and line of a bad line."""

from __future__ import annotations

import pytest

from conan_core.errors import ConanError
from conan_core.jsonl import iter_jsonl


class CustomError(ConanError):
    """The error type a caller asks iter_jsonl to raise."""


def test_values_with_their_line_numbers_blank_lines_skipped(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n"text"\n[1, 2]\n', encoding="utf-8")
    assert list(iter_jsonl(path)) == [(1, {"a": 1}), (3, "text"), (4, [1, 2])]


def test_a_line_that_is_not_utf8_is_named_with_its_bytes(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    rows = iter_jsonl(path, error=CustomError)
    assert next(rows) == (1, {"text": "ok"})
    with pytest.raises(CustomError, match=r"latin1\.jsonl:2: not valid UTF-8 \(byte e9 at column 14\)"):
        next(rows)


def test_invalid_json_is_named_with_line_and_column(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"a": 1}\n{"a": }\n', encoding="utf-8")
    with pytest.raises(ConanError, match=r"broken\.jsonl:2: invalid JSON \(Expecting value at column 7\)"):
        list(iter_jsonl(path))
