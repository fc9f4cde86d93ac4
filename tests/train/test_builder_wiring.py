"""One assembly path: ``--dry-run`` describes exactly what a stage trains with, because the stage
runner trains with what :func:`conan_core.builder.build_stage` returns."""

from __future__ import annotations

import pytest

from conan_core.builder import build_stage
from conan_core.config import load_config
from conan_core.dry_run import dry_run_report
from conan_core.tokenizer import load_tokenizer
from conan_core.train import distributed as D
from conan_core.train.stages import supervised
from conan_core.train.stages.common import StageContext, hidden_size, start_model
from tests.train.harness import copy_run

pytestmark = pytest.mark.slow


def test_changed_num_negatives_reads_back_from_dry_run_and_training(trained_run, tmp_path):
    _, run, _ = trained_run
    sets = ("supervised.num_negatives=3", "supervised.sts_weight=0.5")
    out = copy_run(run, tmp_path / "r", ("pretrain", "sft", "weak"), sets)
    cfg = load_config(out / "config.yaml")
    report = dry_run_report(cfg)
    line = next(x for x in report.splitlines() if x.startswith("supervised:"))
    assert "miner=dynamic_v2(num_negatives=3" in line and "sts_weight=0.5" in line

    ctx = StageContext(cfg=cfg, stage="supervised", run_dir=out, env=D.DistEnv(),
                       tokenizer=load_tokenizer(out / "tokenizer"))
    model = start_model(ctx)
    components = build_stage(cfg, "supervised", hidden_size(model))
    wiring = supervised.wire(ctx, model, components)
    try:
        batch = wiring.stream.next_batch()
    finally:
        wiring.stream.close()
    assert wiring.stream.miner.num_negatives == 3
    assert batch["negative_ids"].shape == (cfg.supervised.batch_size, 3)  # what the trainer gets
    assert wiring.objective.sts_weight == 0.5 and wiring.objective.loss is components.loss
