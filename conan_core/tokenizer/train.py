"""Train a sentencepiece BPE tokenizer and save it as a transformers *fast* tokenizer.

Vocabulary layout (ids are stable across vocab sizes)::

    0 <pad>   1 <s>   2 </s>   3 <unk>   4 <instruct>   5 <query>   6 <passage>
    7..262    <0x00> .. <0xFF>   (byte fallback: every UTF-8 byte has a token)
    263..     learned BPE pieces, best merge first, then single characters

Settings and why:

* ``model_type=bpe``, ``byte_fallback=True``: a character outside the vocabulary becomes its UTF-8
  bytes, so ``<unk>`` never appears for valid text (RECIPE §1: byte-level BPE).
* ``normalization_rule_name=identity``, ``remove_extra_whitespaces=False``,
  ``add_dummy_prefix=False``: no NFKC, whitespace kept exactly, no space invented at the start, so
  ``decode(encode(s)) == s`` byte for byte (see :mod:`conan_core.tokenizer.text`).
* ``character_coverage`` (default 0.9995): the share of character occurrences in the training
  sample that get their own token; the rarest characters fall back to bytes. For corpora dominated
  by CJK (thousands of distinct characters) 0.9995 is the usual value; for alphabetic scripts
  (Latin, Cyrillic, Arabic, Hebrew, Greek) 1.0 costs nothing because their alphabets are small. At
  most half of the learnable vocabulary (``vocab_size - 263``) is spent on single characters: when
  the requested coverage needs more, the coverage is lowered to fit and the effective value is
  recorded in ``conan_tokenizer.json`` (the missing characters still encode, as bytes). The cut
  is done before sentencepiece (which is then run with coverage 1.0): training sentences are split
  at characters outside the kept set, exactly as sentencepiece's own cut keeps pieces from spanning
  them, but without sentencepiece's floor of 0.98.

The transformers side is built from the sentencepiece model, not re-trained: the same vocabulary
and ids, merges derived from the piece scores, the word-boundary symbol ``▁`` rewritten to a real
space inside the pieces. Results are identical to ``SentencePieceProcessor.encode`` for every
string without a literal U+2581 ``▁``; sentencepiece itself cannot tell a literal ``▁`` from a
space, the fast tokenizer encodes it as its three bytes and so round-trips it.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

from conan_core.errors import ConanError
from conan_core.tokenizer.text import BOS, EOS, MARKERS, PAD, UNK, iter_texts, reservoir_sample, split_long

log = logging.getLogger(__name__)

#: Ids below this are control tokens, markers and the 256 byte tokens.
NUM_RESERVED = 4 + len(MARKERS) + 256
#: Training sentences longer than this many characters are cut at line ends (sentencepiece skips
#: sentences over ``max_sentence_length`` bytes, which would silently drop long documents).
MAX_SENTENCE_CHARS = 4096
#: Default maximum sequence length recorded in the tokenizer config (RECIPE §1: 32,768 context).
MODEL_MAX_LENGTH = 32768
SPM_FILE = "sentencepiece.model"
META_FILE = "conan_tokenizer.json"


class TokenizerTrainError(ConanError, ValueError):
    """Tokenizer training could not run (too little data, vocabulary too large or too small)."""


def select_characters(sentences: Iterable[str], coverage: float, max_chars: int) -> tuple[set[str], float]:
    """(characters that get their own token, share of character occurrences they cover).

    The most frequent characters, until ``coverage`` (in (0, 1]) of all occurrences is reached,
    at most ``max_chars`` of them; spaces always stay (they become sentencepiece's ``▁``).
    """
    counts = Counter()
    for s in sentences:
        counts.update(s)
    counts.pop(" ", None)
    total = sum(counts.values())
    kept: set[str] = set()
    acc = 0
    for ch, c in counts.most_common():
        if len(kept) >= max_chars or (total and acc / total >= coverage):
            break
        kept.add(ch)
        acc += c
    return kept | {" "}, (acc / total if total else 1.0)


def restrict_to(sentences: Sequence[str], kept: set[str]) -> list[str]:
    """Sentences cut into fragments at every character outside ``kept`` (fragments only of spaces
    dropped). A learned piece can never contain such a character, so this is what sentencepiece's
    own coverage cut does, without its 0.98 floor on ``character_coverage``."""
    out = []
    for s in sentences:
        if all(ch in kept for ch in s):
            out.append(s)
            continue
        buf = []
        for ch in s:
            if ch in kept:
                buf.append(ch)
            elif buf:
                out.append("".join(buf))
                buf = []
        if buf:
            out.append("".join(buf))
    return [s for s in out if s.strip(" ")]


def train_sentencepiece(sentences: Sequence[str], vocab_size: int, *, character_coverage: float = 0.9995,
                        num_threads: int | None = None) -> tuple[bytes, dict]:
    """Train the sentencepiece BPE model on in-memory ``sentences`` (deterministic: BPE training
    has no randomness; the sample is where the seed enters).

    Returns (serialized model, info) with info = {"effective_character_coverage", "characters"}.
    """
    import sentencepiece as spm

    if vocab_size <= NUM_RESERVED + 8:
        raise TokenizerTrainError(f"vocab_size={vocab_size} is too small: {NUM_RESERVED} ids are reserved "
                                  f"(control tokens, markers, 256 bytes); use at least {NUM_RESERVED + 64}")
    if not sentences:
        raise TokenizerTrainError("no training text: the inputs yielded no non-empty text")
    max_chars = (vocab_size - NUM_RESERVED) // 2
    kept, cov = select_characters(sentences, character_coverage, max_chars)
    if len(kept) - 1 >= max_chars and cov < character_coverage:
        log.warning("character_coverage %.6f needs more than half of the learnable vocabulary; "
                    "using %.6f (%d characters, the rest fall back to bytes)", character_coverage, cov,
                    len(kept) - 1)
    # The coverage cut is done here (sentencepiece refuses coverages below 0.98), so sentencepiece
    # keeps every character it sees.
    sentences = restrict_to(sentences, kept)
    if not sentences:
        raise TokenizerTrainError("no training text left after the character coverage cut")
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=model, model_type="bpe",
            vocab_size=vocab_size, character_coverage=1.0, byte_fallback=True,
            normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=False,
            split_digits=False, allow_whitespace_only_pieces=False,
            pad_id=0, bos_id=1, eos_id=2, unk_id=3, pad_piece=PAD, bos_piece=BOS, eos_piece=EOS,
            unk_piece=UNK, user_defined_symbols=list(MARKERS),
            max_sentence_length=4 * MAX_SENTENCE_CHARS + 16, input_sentence_size=0,
            shuffle_input_sentence=False, seed_sentencepiece_size=1_000_000,
            num_threads=num_threads or max(1, min(16, os.cpu_count() or 1)),
            minloglevel=2)
    except RuntimeError as exc:
        msg = str(exc)
        hint = ("lower --vocab-size or give more text" if "too high" in msg.lower()
                else "raise --vocab-size or lower --character-coverage")
        raise TokenizerTrainError(f"sentencepiece training failed: {msg.strip()} ({hint})") from None
    return model.getvalue(), {"effective_character_coverage": cov, "characters": len(kept) - 1}


def build_fast_tokenizer(spm_bytes: bytes):
    """A ``tokenizers.Tokenizer`` with the ids and pieces of the sentencepiece model ``spm_bytes``.

    Pieces: ``▁`` → ``" "``; merges: every split ``(a, b)`` of a learned piece into two learned
    pieces, ranked by the piece's id (sentencepiece merges the pair whose result scores highest,
    and scores decrease with id). Splitting before each space is exact because no learned piece
    holds a space except at its start.
    """
    from sentencepiece import sentencepiece_model_pb2 as pb
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    proto = pb.ModelProto()
    proto.ParseFromString(spm_bytes)
    kinds = pb.ModelProto.SentencePiece.Type
    vocab: dict[str, int] = {}
    learned: dict[str, int] = {}
    for i, piece in enumerate(proto.pieces):
        text = piece.piece.replace("\u2581", " ") if piece.type == kinds.NORMAL else piece.piece
        vocab[text] = i
        if piece.type == kinds.NORMAL:
            learned[text] = i
    ranked = []
    for text, i in learned.items():
        for k in range(1, len(text)):
            a, b = text[:k], text[k:]
            if a in learned and b in learned:
                ranked.append((i, k, a, b))
    ranked.sort()
    merges = [(a, b) for _, _, a, b in ranked]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True, unk_token=UNK, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_next")
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (PAD, BOS, EOS, UNK)])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in MARKERS])
    # Like sentencepiece, a literal "<s>" in text is text, not the control token.
    tok.encode_special_tokens = True
    return tok


def save_tokenizer(spm_bytes: bytes, out_dir: str | Path, meta: dict | None = None) -> Path:
    """Write ``out_dir`` so that ``AutoTokenizer.from_pretrained(out_dir)`` loads the fast tokenizer.

    Files: tokenizer.json, tokenizer_config.json, special_tokens_map.json, the sentencepiece model
    (``sentencepiece.model``, kept for reference and parity checks) and ``conan_tokenizer.json``
    (training settings). ``tok(text)`` adds ``<s>`` … ``</s>``; ``add_special_tokens=False`` gives
    exactly the sentencepiece ids.
    """
    from transformers import PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=build_fast_tokenizer(spm_bytes), bos_token=BOS, eos_token=EOS, unk_token=UNK,
        pad_token=PAD, add_bos_token=True, add_eos_token=True, clean_up_tokenization_spaces=False,
        split_special_tokens=True, model_max_length=MODEL_MAX_LENGTH, padding_side="right")
    fast.save_pretrained(str(out))
    # The generic class name loads in transformers 4.x too (v5 maps it to its tokenizers backend).
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    # Older transformers read the special tokens from this file; v5 no longer writes it.
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": UNK, "pad_token": PAD}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
    (out / SPM_FILE).write_bytes(spm_bytes)
    (out / META_FILE).write_text(json.dumps(meta or {}, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def training_sentences(inputs: Sequence[str | Path], max_sentences: int, seed: int = 0,
                       progress: bool = True) -> list[str]:
    """A random sample (at most ``max_sentences``) of the texts of ``inputs``, long texts cut at
    line ends into pieces of at most 4096 characters (each piece is one training sentence)."""
    def pieces():
        for text in iter_texts(inputs):
            yield from split_long(text, MAX_SENTENCE_CHARS)

    return reservoir_sample(pieces(), max_sentences, seed, progress=progress)


def train_tokenizer(inputs: Sequence[str | Path], vocab_size: int, out_dir: str | Path, *,
                    character_coverage: float = 0.9995, max_sentences: int = 200_000, seed: int = 0,
                    progress: bool = True) -> Path:
    """Train a BPE tokenizer on ``inputs`` and save it (see :func:`save_tokenizer`); returns ``out_dir``.

    ``inputs``: text files (one text per line), JSONL files (fields text/query/pos) or webdataset
    shard directories. ``max_sentences`` texts are sampled uniformly (reservoir, ``seed``).
    ``vocab_size`` counts every id, the 263 reserved ones included (RECIPE §1: 150,000).
    """
    if not 0 < character_coverage <= 1:
        raise TokenizerTrainError(f"character_coverage={character_coverage} must be in (0, 1]")
    if max_sentences <= 0:
        raise TokenizerTrainError(f"max_sentences={max_sentences} must be positive")
    sentences = training_sentences(inputs, max_sentences, seed, progress=progress)
    spm_bytes, info = train_sentencepiece(sentences, vocab_size, character_coverage=character_coverage)
    meta = {"vocab_size": vocab_size, "character_coverage": character_coverage, **info,
            "sentences": len(sentences),
            "max_sentences": max_sentences, "seed": seed, "inputs": [str(p) for p in inputs],
            "model_type": "bpe", "byte_fallback": True, "normalization": "identity",
            "add_dummy_prefix": False}
    return save_tokenizer(spm_bytes, out_dir, meta)
