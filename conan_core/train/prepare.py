"""Run preparation before the first stage: the demo corpus and the tokenizer (idempotent).

* ``data.demo`` with no ``data.dir``: :func:`conan_core.data.demo.build_demo` writes ``RUN/data``
  (skipped when ``RUN/data/demo_summary.json``, written last by the builder, exists);
* ``tokenizer.path`` unset and ``RUN/tokenizer/tokenizer.json`` missing: a tokenizer is trained on
  the pretraining data (``<data>/pretrain``, or the texts of ``pretrain.source`` when it is set;
  with pretraining disabled, the first enabled stage's source) into ``RUN/tokenizer.tmp`` and
  renamed into place, so an interrupted training never leaves a half-written tokenizer behind.

The data root must exist only when the run reads from it (:func:`conan_core.train.data.uses_data_root`):
a run whose enabled stages all name their own sources needs neither ``data.dir`` nor the demo.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from conan_core.config import STAGES
from conan_core.errors import ConanError
from conan_core.fsio import publish_dir
from conan_core.train.data import data_root, uses_data_root

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
    if not root.is_dir() and uses_data_root(cfg):
        missing = [f"{s}.source" for s in STAGES if getattr(cfg, s).enabled and getattr(cfg, s).source is None]
        raise ConanError(f"data directory {root} does not exist (data.dir): set data.dir to a data root with "
                         "pretrain/ sft/ supervised/ sts/ eval/, set data.demo: true, or give "
                         f"{', '.join(missing)} their own sources")
    tok = tokenizer_dir(cfg, run_dir)
    trained = False
    if not (tok / "tokenizer.json").is_file():
        if cfg.tokenizer.path:
            raise ConanError(f"tokenizer.path {tok} has no tokenizer.json; point it at a saved tokenizer "
                             "directory or unset it to train one")
        from conan_core.tokenizer import train_tokenizer

        tmp = tok.with_name(tok.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        inputs, described = _tokenizer_inputs(cfg, run_dir, tmp)
        log.info("training a %d-token tokenizer on %s", cfg.tokenizer.vocab_size, described)
        train_tokenizer(inputs, cfg.tokenizer.vocab_size, tmp, character_coverage=cfg.tokenizer.character_coverage,
                        max_sentences=cfg.tokenizer.max_sentences, seed=cfg.seed, progress=progress)
        for sample_file in tmp.glob(_SAMPLE_FILE):  # the drawn texts are an input, not part of the tokenizer
            sample_file.unlink()
        publish_dir(tmp, tok)
        trained = True
    return {"data": str(root), "tokenizer": str(tok), "built_demo": built, "trained_tokenizer": trained}


_SAMPLE_FILE = "tokenizer-input.jsonl"


def _tokenizer_inputs(cfg: Any, run_dir: Path, tmp: Path) -> tuple[list[Path], str]:
    """What the tokenizer trains on: the data root's pretraining shards, or, when the first enabled
    stage has its own source, a sample of ``tokenizer.max_sentences`` of its texts written to a JSONL
    file in ``tmp`` (a reservoir sample: one pass, bounded memory); and a description for the log."""
    from conan_core.train.data import one_pass, source_spec

    stage = next((s for s in STAGES if getattr(cfg, s).enabled), None)
    if stage is None:
        raise ConanError("no stage is enabled, so there is no text to train the tokenizer on: set "
                         "tokenizer.path to a saved tokenizer or enable a stage")
    if getattr(cfg, stage).source is None:
        path = data_root(cfg, run_dir) / "pretrain"
        if not path.exists():
            raise ConanError(f"no pretraining data at {path} to train the tokenizer on: set data.dir to a data "
                             f"root, {stage}.source to your data, or tokenizer.path to a saved tokenizer")
        return [path], str(path)
    spec = source_spec(cfg, stage, run_dir)
    from conan_core.tokenizer.text import reservoir_sample

    texts = reservoir_sample(_texts(one_pass(spec, seed=cfg.seed)), cfg.tokenizer.max_sentences, cfg.seed,
                             progress=False)
    if not texts:
        raise ConanError(f"{stage}.source yielded no text to train the tokenizer on (check its path and the "
                         "bad-data counters), or set tokenizer.path to a saved tokenizer")
    out = tmp / _SAMPLE_FILE
    out.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return [out], f"{len(texts)} texts of {stage}.source ({spec['type']})"


def _texts(samples: Any) -> Any:
    """Every text field of each sample (text; query, pos, neg; s1, s2)."""
    for sample in samples:
        for name in ("text", "query", "pos", "s1", "s2"):
            if isinstance(sample.get(name), str):
                yield sample[name]
        for neg in sample.get("neg") or []:
            yield neg
