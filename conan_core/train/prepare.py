"""Run preparation before the first stage: the demo corpus and the tokenizer (idempotent).

* ``data.demo`` with no ``data.dir``: :func:`conan_core.data.demo.build_demo` writes ``RUN/data``
  (skipped when ``RUN/data/demo_summary.json``, written last by the builder, exists);
* ``tokenizer.path`` unset and ``RUN/tokenizer/tokenizer.json`` missing: a tokenizer is trained on
  the pretraining data (``<data>/pretrain``) into ``RUN/tokenizer.tmp`` and renamed into place, so
  an interrupted training never leaves a half-written tokenizer behind.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from conan_core.errors import ConanError
from conan_core.fsio import publish_dir
from conan_core.train.data import data_root

log = logging.getLogger("conan_core.train")


def tokenizer_dir(cfg: Any, run_dir: Path) -> Path:
    """``tokenizer.path`` when set, else ``RUN/tokenizer``."""
    return Path(cfg.tokenizer.path) if cfg.tokenizer.path else Path(run_dir) / "tokenizer"


def prepare_run(cfg: Any, run_dir: str | Path, *, progress: bool = True) -> dict:
    """Make sure the data and the tokenizer of ``cfg`` exist under ``run_dir``; returns what was done:
    ``{"data": path, "tokenizer": path, "built_demo": bool, "trained_tokenizer": bool}``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    root = data_root(cfg, run_dir)
    built = False
    if cfg.data.dir is None and cfg.data.demo and not (root / "demo_summary.json").is_file():
        from conan_core.data.demo import build_demo

        log.info("building the demo corpus into %s (scale %s)", root, cfg.data.demo_scale)
        build_demo(root, seed=cfg.seed, scale=cfg.data.demo_scale, verbose=progress)
        built = True
    if not root.is_dir():
        raise ConanError(f"data directory {root} does not exist: set data.dir to a data root with "
                         "pretrain/ sft/ supervised/ sts/ eval/, or data.demo: true")
    tok = tokenizer_dir(cfg, run_dir)
    trained = False
    if not (tok / "tokenizer.json").is_file():
        if cfg.tokenizer.path:
            raise ConanError(f"tokenizer.path {tok} has no tokenizer.json; point it at a saved tokenizer "
                             "directory or unset it to train one")
        from conan_core.tokenizer import train_tokenizer

        inputs = [root / "pretrain"]
        if not inputs[0].exists():
            raise ConanError(f"no pretraining data at {inputs[0]} to train the tokenizer on")
        tmp = tok.with_name(tok.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        log.info("training a %d-token tokenizer on %s", cfg.tokenizer.vocab_size, inputs[0])
        train_tokenizer(inputs, cfg.tokenizer.vocab_size, tmp, character_coverage=cfg.tokenizer.character_coverage,
                        max_sentences=cfg.tokenizer.max_sentences, seed=cfg.seed, progress=progress)
        publish_dir(tmp, tok)
        trained = True
    return {"data": str(root), "tokenizer": str(tok), "built_demo": built, "trained_tokenizer": trained}
