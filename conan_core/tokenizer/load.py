"""Load a tokenizer directory written by :func:`conan_core.tokenizer.train.train_tokenizer`."""

from __future__ import annotations

from pathlib import Path

from conan_core.errors import ConanError
from conan_core.tokenizer.train import SPM_FILE


class TokenizerLoadError(ConanError, FileNotFoundError):
    """A tokenizer directory is missing or incomplete."""


def load_tokenizer(path: str | Path):
    """The transformers fast tokenizer of ``path`` (``AutoTokenizer.from_pretrained``).

    Any directory with a ``tokenizer.json`` loads (a conan tokenizer or a Hugging Face one); the
    result is always a fast (Rust ``tokenizers``) tokenizer.
    """
    from transformers import AutoTokenizer

    path = Path(path)
    if not (path / "tokenizer.json").is_file():
        raise TokenizerLoadError(f"{path}: no tokenizer.json; train one with "
                                 f"`conan tokenizer train --input DATA --vocab-size N --out {path}` "
                                 "or point tokenizer.path at a saved tokenizer directory")
    tok = AutoTokenizer.from_pretrained(str(path))
    if not getattr(tok, "is_fast", False):
        raise TokenizerLoadError(f"{path}: transformers loaded a slow tokenizer ({type(tok).__name__}); "
                                 "the directory's tokenizer.json is needed")
    return tok


def load_sentencepiece(path: str | Path):
    """The ``sentencepiece.SentencePieceProcessor`` saved beside the fast tokenizer (reference)."""
    import sentencepiece as spm

    model = Path(path) / SPM_FILE
    if not model.is_file():
        raise TokenizerLoadError(f"{model}: missing; only directories written by conan's tokenizer "
                                 "training hold the sentencepiece model")
    return spm.SentencePieceProcessor(model_file=str(model))
