"""Text hygiene and corpus reading for tokenizer training (pure Python, no heavy imports).

Normalisation policy (the tokenizer is lossless on every valid Unicode string):

* **No Unicode normalisation.** Text is never NFKC/NFC-normalised: ``"e\\u0301"`` and ``"é"`` stay
  different byte sequences and tokenize differently. Whitespace is kept exactly (leading spaces,
  runs of spaces, tabs, ``\\r\\n``, trailing newlines).
* **Lone surrogates.** A Python ``str`` may hold UTF-16 surrogate code points (U+D800–U+DFFF),
  e.g. from ``json.loads('"\\\\ud83d"')`` or ``surrogateescape`` decoding. They are not valid
  UTF-8, so no tokenizer can encode them. :func:`clean_text` repairs them: a correctly ordered
  high+low pair becomes the character it encodes (``"\\ud83d\\ude00"`` → ``"😀"``), every other
  surrogate becomes U+FFFD REPLACEMENT CHARACTER. Callers that may hold such strings (JSON from
  the wild) call :func:`clean_text` before tokenizing; data readers of conan_core do so.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterable, Iterator

from conan_core.data.text import (  # noqa: F401  (this module's API: the text conventions)
    BOS,
    EOS,
    INSTRUCT,
    MARKERS,
    PAD,
    PASSAGE,
    QUERY,
    UNK,
    clean_text,
    format_query,
)
from conan_core.errors import DataError

#: Sample fields read from JSONL lines and shard samples, in this order.
TEXT_FIELDS = ("text", "query", "pos")


class TokenizerDataError(DataError):
    """An input of tokenizer training is missing or unreadable (the message names the path)."""


def split_long(text: str, max_chars: int) -> list[str]:
    """Split ``text`` into pieces of at most ``max_chars`` characters, at line ends where possible.

    The pieces concatenate back to ``text`` exactly (newlines stay attached to their line).
    """
    if len(text) <= max_chars:
        return [text]
    out: list[str] = []
    buf = ""
    for line in text.splitlines(keepends=True):
        while len(line) > max_chars:  # one very long line: cut it hard
            if buf:
                out.append(buf)
                buf = ""
            out.append(line[:max_chars])
            line = line[max_chars:]
        if len(buf) + len(line) > max_chars:
            out.append(buf)
            buf = ""
        buf += line
    if buf:
        out.append(buf)
    return out


def _texts_of_sample(sample: dict) -> Iterator[str]:
    for key in TEXT_FIELDS:
        value = sample.get(key)
        if isinstance(value, str) and value:
            yield value


def _iter_jsonl(path: Path) -> Iterator[str]:
    """Texts of a JSONL file: string lines, or the text fields of object lines."""
    from conan_core.jsonl import iter_jsonl

    for _, row in iter_jsonl(path, error=TokenizerDataError):
        if isinstance(row, str):
            yield row
        elif isinstance(row, dict):
            yield from _texts_of_sample(row)


def _iter_text_file(path: Path) -> Iterator[str]:
    # Plain text: one sentence/document per line (the sentencepiece convention).
    with path.open("r", encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if line:
                yield line


def iter_shard_dir(path: Path) -> Iterator[dict]:
    """Samples of a shard directory (``manifest.json`` + webdataset tars), in manifest order.

    Uses the shard reader of :mod:`conan_core.data.shards`; a directory of tars without a manifest
    is read in file-name order. Undecodable samples are skipped (the tokenizer only needs text).
    """
    from conan_core.data.samples import DataError, decode_members
    from conan_core.data.shards import MANIFEST_NAME, iter_tar_groups, read_manifest

    if (path / MANIFEST_NAME).is_file():
        manifest = read_manifest(path)
        tars = [manifest.path(shard) for shard in manifest.shards]
    else:
        tars = sorted(path.glob("*.tar"))
    if not tars:
        raise TokenizerDataError(f"{path}: no shards (manifest.json lists none and there is no *.tar)")
    for tar in tars:
        for group in iter_tar_groups(tar):
            try:
                sample, _ = decode_members(group.members, repair=True)
            except DataError:
                continue
            yield sample


def iter_texts(inputs: Iterable[str | Path]) -> Iterator[str]:
    """Every text of ``inputs``: ``.txt`` (one per line), ``.jsonl`` (fields text/query/pos) or
    shard directories (fields text/query/pos). Yields cleaned (:func:`clean_text`) strings."""
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            if not (path / "manifest.json").exists() and not any(path.glob("*.tar")):
                raise TokenizerDataError(f"{path}: a directory input must hold webdataset shards "
                                         "(*.tar and manifest.json)")
            for sample in iter_shard_dir(path):
                for text in _texts_of_sample(sample):
                    yield clean_text(text)
        elif path.is_file():
            it = _iter_jsonl(path) if path.suffix in (".jsonl", ".json") else _iter_text_file(path)
            for text in it:
                yield clean_text(text)
        else:
            raise TokenizerDataError(f"{path}: no such file or directory (tokenizer input); give text "
                                     "files, JSONL files or shard directories")


def reservoir_sample(items: Iterable[str], k: int, seed: int, progress: bool = True) -> list[str]:
    """A uniform random sample of at most ``k`` items of a stream (one pass, O(k) memory).

    Deterministic for a given stream, ``k`` and ``seed``; the result keeps stream order.
    """
    rng = random.Random(seed)
    reservoir: list[tuple[int, str]] = []
    iterator: Iterable[str] = items
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(items, desc="tokenizer sample", unit=" sent", mininterval=1.0)
    for n, item in enumerate(iterator):
        if n < k:
            reservoir.append((n, item))
        else:
            j = rng.randrange(n + 1)
            if j < k:
                reservoir[j] = (n, item)
    reservoir.sort(key=lambda t: t[0])
    return [item for _, item in reservoir]
