"""Fixtures of the training tests (the helpers are in :mod:`tests.train.harness`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.train import harness as H


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory) -> Path:
    """The uninterrupted run R every resume is compared with."""
    out = tmp_path_factory.mktemp("reference")
    H.assert_ok(H.run_job({**H.BASE, "out": str(out)}))
    return out


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """``(cfg, run_dir, summaries)``: the demo corpus at scale 0.1, a 600-token tokenizer and all four
    stages of a 2-layer d=32 model trained in this process (about 25 s on 2 CPU cores)."""
    from conan_core.config import load_config
    from conan_core.train.stages import run_stage

    run = tmp_path_factory.mktemp("run")
    cfg = load_config("tiny", H.STAGE_OVERRIDES)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster on a shared 2-core machine
    try:
        summaries = {stage: run_stage(cfg, stage, run, progress=False)
                     for stage in ("pretrain", "sft", "weak", "supervised")}
    finally:
        torch.set_num_threads(threads)
    return cfg, run, summaries


@pytest.fixture(scope="session")
def small_tokenizer(tmp_path_factory):
    """A 400-token BPE tokenizer trained on standard-library docstrings (about a second)."""
    import inspect
    import json as json_mod
    import pathlib

    from conan_core.tokenizer import load_tokenizer, train_tokenizer

    lines = []
    for module in (json_mod, pathlib, inspect):
        for _, obj in sorted(vars(module).items()):
            doc = getattr(obj, "__doc__", None)
            if isinstance(doc, str):
                lines.extend(x.strip() for x in doc.splitlines() if x.strip())
    root = tmp_path_factory.mktemp("tok")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(dict.fromkeys(lines)), encoding="utf-8")
    train_tokenizer([corpus], 400, root / "tokenizer", progress=False)
    return load_tokenizer(root / "tokenizer")
