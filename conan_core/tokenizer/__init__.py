"""Tokenizer: sentencepiece BPE training (byte fallback, lossless) saved as a transformers fast
tokenizer. Importing this package imports neither sentencepiece nor transformers."""

from conan_core.tokenizer.load import load_sentencepiece, load_tokenizer
from conan_core.tokenizer.text import INSTRUCT, MARKERS, PASSAGE, QUERY, clean_text, format_query, iter_texts
from conan_core.tokenizer.train import train_tokenizer

__all__ = ["INSTRUCT", "MARKERS", "PASSAGE", "QUERY", "clean_text", "format_query", "iter_texts", "load_sentencepiece",
           "load_tokenizer", "train_tokenizer"]
