"""The text conventions every layer shares: control tokens, prompt markers, the query format and
text repair. Pure Python, no imports: the tokenizer, the data steps and the embedder all use it.

Lone surrogates: a Python ``str`` may hold UTF-16 surrogate code points (U+D800–U+DFFF), e.g. from
``json.loads('"\\ud83d"')`` or ``surrogateescape`` decoding. They are not valid UTF-8, so no tokenizer
can encode them; :func:`clean_text` repairs them (the only change it ever makes).
"""

from __future__ import annotations

#: Control tokens, ids 0..3 in every conan tokenizer.
PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
#: Markers for prompt templates; ids 4..6, matched wherever they occur in input text.
INSTRUCT, QUERY, PASSAGE = "<instruct>", "<query>", "<passage>"
MARKERS = (INSTRUCT, QUERY, PASSAGE)


def format_query(text: str, instruction: str | None) -> str:
    """The model input of a query: ``"<instruct>{instruction}<query>{text}"``, or ``text`` when the
    instruction is empty or None (no markers, as for documents)."""
    if not instruction:
        return text
    return f"{INSTRUCT}{instruction}{QUERY}{text}"


def clean_text(text: str) -> str:
    """``text`` as valid Unicode: surrogate pairs joined, lone surrogates → U+FFFD; nothing else changes.

    Idempotent; a string without surrogates is returned unchanged (same object).
    """
    if not any("\ud800" <= ch <= "\udfff" for ch in text):
        return text
    # UTF-16 with surrogatepass re-pairs well-formed high/low pairs; the decode then replaces
    # each unpaired surrogate's two bytes with one U+FFFD.
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
