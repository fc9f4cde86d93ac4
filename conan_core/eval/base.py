"""Base class of evaluators (registry kind ``evaluators``) and the encoder adapter they share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from pydantic import Field

from conan_core.errors import ConanError
from conan_core.registry import ComponentConfig

EncodeFn = Callable[[list[str]], np.ndarray]


class Evaluator(ABC):
    """``evaluate(embedder, data) -> dict[str, float]`` with the model's metrics and, under
    ``bm25/…``, the BM25 reference on the same data.

    ``embedder`` is an :class:`~conan_core.embedder.Embedder` (queries then go through
    ``encode_queries`` with the run's instruction, documents through ``encode_corpus``), any object
    with an ``encode(texts) -> array [N, D]`` method, or a plain callable ``encode(texts)``.
    ``data`` is a path (the task's own file / directory, an eval root or a data root: see
    :mod:`conan_core.eval.data`) or the already loaded data object of the task. Integer counts
    (``n_queries`` ...) are reported next to the metrics; every metric is a float.
    """

    #: name of the task's data under an eval root (``retrieval`` -> ``eval/retrieval/``)
    task: str = ""

    class Config(ComponentConfig):
        """Fields shared by every evaluator."""

        batch_size: int = Field(64, gt=0, description="texts per encode call")
        bm25: bool = Field(True, description="also compute the BM25 reference (bm25/<metric>)")

    @abstractmethod
    def __init__(self, config: ComponentConfig, **runtime):
        self.config = config

    @abstractmethod
    def load(self, path: str | Path) -> Any:
        """Read this task's data from ``path`` (raises :class:`~conan_core.eval.data.EvalDataError`)."""

    def evaluate(self, embedder, data) -> dict:
        """Abstract: see the class docstring."""

    def _data(self, data: Any, kind: type) -> Any:
        """``data`` when it is already a ``kind``, else :meth:`load` of it as a path."""
        if isinstance(data, kind):
            return data
        if isinstance(data, (str, Path)):
            return self.load(data)
        raise ConanError(f"{type(self).__name__}.evaluate: data must be a path or a {kind.__name__}, "
                         f"got {type(data).__name__}")


@dataclass
class Encoders:
    """The three encode functions an evaluator needs, each ``list[str] -> float32 [N, D]``."""

    query: EncodeFn
    corpus: EncodeFn
    plain: EncodeFn


def as_encoders(embedder: Any, *, batch_size: int, query_instruction: str | None = None) -> Encoders:
    """Adapt an Embedder, an object with ``.encode`` or a callable to :class:`Encoders`.

    With an Embedder (it has ``encode_queries``) queries get its query instruction, or
    ``query_instruction`` when given; other encoders get ``query_instruction`` prepended as plain
    text (or nothing). Outputs are float32 [N, D]; rows are not assumed normalised.
    """
    encode = getattr(embedder, "encode", None)
    if encode is None:
        if not callable(embedder):
            raise ConanError(f"cannot evaluate a {type(embedder).__name__}: pass an Embedder, an object "
                             "with encode(texts) or a callable encode(texts) -> array [N, D]")
        encode = embedder
    is_embedder = hasattr(embedder, "encode_queries") and hasattr(embedder, "encode_corpus")

    def plain(texts: Sequence[str]) -> np.ndarray:
        if is_embedder:
            return _checked(embedder.encode(list(texts), batch_size=batch_size, normalize=False), texts)
        return _checked(encode(list(texts)), texts)

    def query(texts: Sequence[str]) -> np.ndarray:
        if is_embedder:
            if query_instruction is None:
                return _checked(embedder.encode_queries(list(texts), batch_size=batch_size, normalize=False), texts)
            return _checked(embedder.encode(list(texts), batch_size=batch_size, normalize=False,
                                            instruction=query_instruction), texts)
        prefix = query_instruction or ""
        return _checked(encode([prefix + t for t in texts]), texts)

    def corpus(texts: Sequence[str]) -> np.ndarray:
        if is_embedder:
            return _checked(embedder.encode_corpus(list(texts), batch_size=batch_size, normalize=False), texts)
        return _checked(encode(list(texts)), texts)

    return Encoders(query=query, corpus=corpus, plain=plain)


def _checked(out: Any, texts: Sequence[str]) -> np.ndarray:
    """The encoder output as float32 [N, D]; wrong shapes or non-finite values raise."""
    if hasattr(out, "detach"):  # a torch tensor from a foreign encoder
        out = out.detach().float().cpu().numpy()
    arr = np.asarray(out, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != len(texts):
        raise ConanError(f"encoder returned shape {list(arr.shape)} for {len(texts)} texts; "
                         "expected [len(texts), dim]")
    if not np.isfinite(arr).all():
        raise ConanError("encoder returned non-finite embeddings (NaN/inf); check the model weights")
    return arr


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero); float32 [N, D]."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def is_count(key: str) -> bool:
    """True for count entries of a result dict (``n_queries``, ``en/n_queries``), not metrics."""
    return key.rsplit("/", 1)[-1].startswith("n_")
