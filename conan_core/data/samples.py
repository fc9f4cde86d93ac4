"""Sample schemas and validation, shared by the shard writer and every reader.

A *sample* is a dict of JSON values. Three kinds exist (``KINDS``):

========  ==============================================================================
kind      fields (required in **bold**; defaults in brackets)
========  ==============================================================================
text      **text**: str
pairs     **query**: str, **pos**: str, neg: list[str] [``[]``], task: str [``"default"``],
          lang: str [``"und"``]; optional id: str, instruction: str (may be empty), label: str
sts       **s1**: str, **s2**: str, **score**: finite float
========  ==============================================================================

Unknown extra fields pass through unchanged. ``__key__`` / ``__url__`` are added by readers.

Every text field (query, pos, each neg, text, s1, s2) must be a ``str`` that encodes to UTF-8
(no lone surrogates), holds no NUL byte and is not empty or whitespace-only. The outcome of each
problem is a reason code, which is also the name of the counter a reader increments:

=================  ======================================================  =====================
reason             what                                                    outcome (skip mode)
=================  ======================================================  =====================
``bad_text``       invalid UTF-8, lone surrogate, NUL, None / non-string   sample dropped
``bad_json``       ``.json`` member that is not a JSON object              sample dropped
``bad_score``      STS score not a finite number                           sample dropped
``empty_text``     empty or whitespace-only text field                     sample dropped
``missing_key``    a required field is absent                              sample dropped
``too_long``       a text field longer than ``max_chars``                  truncated, kept
``repaired_text``  with ``repair=True``: bad text replaced by U+FFFD/dropped kept
=================  ======================================================  =====================

In raise mode every dropping reason raises :class:`DataError` (``too_long`` never raises: it is a
documented truncation). Messages name the shard (``url``) and the sample key.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from typing import Any, Literal, Mapping

from conan_core.errors import DataError as BaseDataError

Kind = Literal["text", "pairs", "sts"]
KINDS: tuple[str, ...] = ("text", "pairs", "sts")

#: required fields per kind
REQUIRED: dict[str, tuple[str, ...]] = {
    "text": ("text",),
    "pairs": ("query", "pos"),
    "sts": ("s1", "s2", "score"),
}
#: text fields that must be non-empty (``neg`` entries are checked too)
TEXT_FIELDS: dict[str, tuple[str, ...]] = {
    "text": ("text",),
    "pairs": ("query", "pos"),
    "sts": ("s1", "s2"),
}
#: optional string fields of pairs (type and encoding checked; may be empty)
OPTIONAL_STRINGS = ("id", "instruction", "label", "task", "lang")
PAIR_DEFAULTS = {"task": "default", "lang": "und"}

#: every reason code a sample can be rejected or flagged with (counter names)
SAMPLE_REASONS = ("bad_text", "bad_json", "bad_score", "empty_text", "missing_key", "too_long",
                  "repaired_text")


class DataError(BaseDataError):
    """Bad data: a sample or a shard that cannot be used.

    Attributes:
        reason: counter name of the problem (``bad_text``, ``truncated_shard`` ...).
        url: shard or file the problem is in (None when unknown, e.g. in the writer's input).
        key: sample key (None for shard-level problems).
    """

    def __init__(self, message: str, *, reason: str = "bad_data", url: str | None = None,
                 key: str | None = None):
        self.reason = reason
        self.url = url
        self.key = key
        self.detail = message
        super().__init__(_locate(message, url, key))

    def at(self, url: str | None, key: str | None) -> "DataError":
        """The same error located in ``url`` / ``key`` (fills only what is missing)."""
        return DataError(self.detail, reason=self.reason, url=self.url or url,
                         key=self.key if self.key is not None else key)


def _locate(message: str, url: str | None, key: str | None) -> str:
    where = []
    if url:
        where.append(f"shard {url}")
    if key is not None:
        where.append(f"sample {key!r}")
    return (": ".join(where) + ": " + message) if where else message


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_text(value: Any, name: str, *, max_chars: int | None, repair: bool,
               allow_empty: bool = False) -> tuple[str, list[str]]:
    """Validate one text field; returns (possibly truncated or repaired text, events).

    Raises DataError with reason ``bad_text`` (not a str, lone surrogate, NUL) or ``empty_text``.
    Events: ``too_long`` when cut to ``max_chars`` code points, ``repaired_text`` when
    ``repair`` replaced lone surrogates with U+FFFD and removed NULs.
    """
    events: list[str] = []
    if not isinstance(value, str):
        raise DataError(f"field {name!r} is {type(value).__name__} {_describe(value)}, expected a string "
                        "(fix the producer or drop the sample)", reason="bad_text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        if not repair:
            raise DataError(f"field {name!r} holds a lone surrogate at position {exc.start} "
                            "(not encodable as UTF-8)", reason="bad_text") from None
        value = _replace_surrogates(value)
        events.append("repaired_text")
    if "\x00" in value:
        if not repair:
            raise DataError(f"field {name!r} holds a NUL byte at position {value.index(chr(0))}",
                            reason="bad_text")
        value = value.replace("\x00", "")
        if "repaired_text" not in events:
            events.append("repaired_text")
    if not allow_empty and not value.strip():
        raise DataError(f"field {name!r} is empty or whitespace-only ({_describe(value)})",
                        reason="empty_text")
    if max_chars is not None and len(value) > max_chars:
        value = value[:max_chars]
        events.append("too_long")
    return value, events


_SURROGATES = re.compile("[\ud800-\udfff]")


def _replace_surrogates(value: str) -> str:
    # a Python str holds code points, so every surrogate in it is a lone one
    return _SURROGATES.sub("\ufffd", value)


def validate_sample(sample: Mapping[str, Any], kind: str, *, max_chars: int | None = None,
                    repair: bool = False) -> tuple[dict, list[str]]:
    """Check ``sample`` against ``kind``'s schema (module docstring).

    Returns (a new dict with defaults filled, text fields truncated to ``max_chars`` code points
    when given, events such as ``too_long``). Raises :class:`DataError` whose ``reason`` names the
    problem. Keys starting with ``__`` are kept as they are.
    """
    if kind not in KINDS:
        raise DataError(f"unknown sample kind {kind!r}; valid: {', '.join(KINDS)}", reason="bad_kind")
    if not isinstance(sample, Mapping):
        raise DataError(f"sample is {type(sample).__name__}, expected a JSON object", reason="bad_json")
    missing = [f for f in REQUIRED[kind] if f not in sample]
    if missing:
        raise DataError(f"missing required field(s) {missing} for kind {kind!r} "
                        f"(has {sorted(k for k in sample if not k.startswith('__'))})", reason="missing_key")
    out = dict(sample)
    events: list[str] = []

    def text(name: str, value: Any, allow_empty: bool = False) -> str:
        cleaned, ev = check_text(value, name, max_chars=max_chars, repair=repair, allow_empty=allow_empty)
        events.extend(e for e in ev if e not in events)
        return cleaned

    for name in TEXT_FIELDS[kind]:
        out[name] = text(name, sample[name])
    if kind == "pairs":
        for name, default in PAIR_DEFAULTS.items():
            out.setdefault(name, default)
        neg = out.get("neg", [])
        if not isinstance(neg, list):
            raise DataError(f"field 'neg' is {type(neg).__name__} {_describe(neg)}, expected a list of "
                            "strings", reason="bad_text")
        out["neg"] = [text(f"neg[{i}]", n) for i, n in enumerate(neg)]
        for name in OPTIONAL_STRINGS:
            if name in out:
                out[name] = text(name, out[name], allow_empty=(name == "instruction"))
    elif kind == "sts":
        score = sample["score"]
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise DataError(f"field 'score' is {_describe(score)}, expected a finite number",
                            reason="bad_score")
        out["score"] = float(score)
    return out, events


def decode_members(members: Mapping[str, bytes], *, repair: bool = False) -> tuple[dict, list[str]]:
    """Turn the members of one webdataset sample (extension -> bytes) into a sample dict.

    ``json`` must hold a JSON object, whose fields are merged in; ``txt`` / ``text`` become the
    ``text`` field; any other extension ``X`` becomes field ``X`` (UTF-8 string). Raises
    DataError ``bad_text`` (invalid UTF-8; with ``repair`` the bytes are decoded with U+FFFD
    instead and ``repaired_text`` is reported) or ``bad_json``.
    """
    out: dict[str, Any] = {}
    events: list[str] = []
    for ext, data in members.items():
        if ext == "json":
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                if not repair:
                    raise DataError(f"member .json is not valid UTF-8 (byte {exc.start}: "
                                    f"{data[exc.start:exc.start + 4]!r})", reason="bad_text") from None
                text = data.decode("utf-8", "replace")
                events.append("repaired_text")
            try:
                obj = json.loads(text)
            except ValueError as exc:
                raise DataError(f"member .json is not valid JSON ({exc})", reason="bad_json") from None
            if not isinstance(obj, dict):
                raise DataError(f"member .json holds a {type(obj).__name__}, expected an object",
                                reason="bad_json")
            out.update(obj)
        else:
            try:
                value = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                if not repair:
                    raise DataError(f"member .{ext} is not valid UTF-8 (byte {exc.start}: "
                                    f"{data[exc.start:exc.start + 4]!r})", reason="bad_text") from None
                value = data.decode("utf-8", "replace")
                if "repaired_text" not in events:
                    events.append("repaired_text")
            out["text" if ext in ("txt", "text") else ext] = value
    return out, events


# ----------------------------------------------------------------------------- identity

def normalize_text(text: str) -> str:
    """Text identity used for false-negative checks: NFKC, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def example_id_of(sample: Mapping[str, Any], index: int) -> str:
    """The example id of a pair sample: its ``id``, else its webdataset ``__key__``, else ``index``.

    Mining and training must name examples the same way; both use this function.
    """
    for key in ("id", "__key__"):
        value = sample.get(key)
        if value is not None and value != "":
            return str(value)
    return str(index)


def example_samples(kind: str, n: int = 12) -> list[dict]:
    """``n`` small valid samples of ``kind`` (conformance checks and tests of sources)."""
    if kind == "text":
        return [{"text": f"Sample text number {i}."} for i in range(n)]
    if kind == "pairs":
        return [{"query": f"query {i}", "pos": f"passage {i}", "neg": [f"other {i}"], "task": "retrieval",
                 "lang": "en"} for i in range(n)]
    if kind == "sts":
        return [{"s1": f"first {i}", "s2": f"second {i}", "score": float(i % 5)} for i in range(n)]
    raise DataError(f"unknown sample kind {kind!r}; valid: {', '.join(KINDS)}", reason="bad_kind")
