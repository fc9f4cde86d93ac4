"""The four stages on the real demo corpus (tiny model): each lowers its loss, writes final/, DONE
and embedder.json per docs/RUNDIR.md, and the result loads with :class:`conan_core.Embedder`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.slow

def losses(run, stage):
    return [float.fromhex(json.loads(line)["loss"]) for line in (run / stage / "steps.jsonl").read_text().splitlines()]


@pytest.fixture
def trained(trained_run):
    return trained_run


@pytest.mark.parametrize("stage", ["pretrain", "sft", "weak", "supervised"])
def test_stage_lowers_its_loss(trained, stage):
    cfg, run, summaries = trained
    values = losses(run, stage)
    assert len(values) == getattr(cfg, stage).steps and all(np.isfinite(values))
    if stage == "supervised":  # steps 5, 10, ... add the CoSENT term: compare the retrieval-only steps
        values = [v for i, v in enumerate(values, 1) if i % cfg.supervised.sts_every]
    k = 5
    first, last = np.mean(values[:k]), np.mean(values[-k:])
    assert last < first, f"{stage}: mean loss of the first {k} steps {first:.4f}, of the last {k} {last:.4f}"
    assert summaries[stage]["steps"] == getattr(cfg, stage).steps


def test_run_directory_contract(trained):
    cfg, run, summaries = trained
    for stage in ("pretrain", "sft", "weak", "supervised"):
        done = json.loads((run / stage / "DONE").read_text())
        assert done["steps"] == getattr(cfg, stage).steps and np.isfinite(done["final_loss"])
        assert (run / stage / "final" / "config.json").is_file()
        assert (run / stage / "final" / "tokenizer.json").is_file()
        committed = sorted(p.name for p in (run / stage / "checkpoints").iterdir())
        assert committed[-1] == f"step-{getattr(cfg, stage).steps:06d}"
    weak = json.loads((run / "weak" / "final" / "embedder.json").read_text())
    assert weak["mask"]["type"] == "soft" and weak["alpha"] == 1.0 and weak["stage"] == "weak"
    sup = json.loads((run / "supervised" / "final" / "embedder.json").read_text())
    assert sup["mask"] == {"type": "bidirectional"} and sup["mrl_dims"] == [16, 32]
    assert sup["pooler"]["type"] == "mean" and sup["max_length"] == cfg.supervised.max_length
    teacher = json.loads((run / "weak" / "teacher.json").read_text())
    assert teacher["threshold"] == 0.4 and teacher["scored"] > 0
    assert summaries["weak"]["teacher"]["dropped_count"] == teacher["dropped_count"] == len(teacher["dropped"])
    # the miner saw every step's scores and its statistics reached the summary
    miner = summaries["supervised"]["counters"]["miner"]
    assert miner["observe_calls_total"] == cfg.supervised.steps
    # soft-mask alpha ramps 1/T .. 1 over the weak stage (logged every log_every steps)
    alphas = [json.loads(x)["alpha"] for x in (run / "weak" / "metrics.jsonl").read_text().splitlines()]
    assert alphas[-1] == 1.0 and all(a < b for a, b in zip(alphas, alphas[1:]))


def test_finished_stage_is_skipped(trained):
    from conan_core.train.stages import run_stage

    cfg, run, summaries = trained
    again = run_stage(cfg, "sft", run, progress=False)
    assert again == json.loads((run / "sft" / "DONE").read_text())


def test_embedder_loads_the_result(trained):
    from conan_core import Embedder

    cfg, run, _ = trained
    emb = Embedder.load(run)
    assert emb.settings.stage == "supervised"
    vec = emb.encode(["an ordered dictionary", "the soft mask"])
    assert vec.shape == (2, 32) and np.allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-5)


def test_later_stage_needs_the_earlier_one(trained, tmp_path):
    from conan_core.errors import ConanError
    from conan_core.train.stages import run_stage

    cfg, run, _ = trained
    fresh = tmp_path / "run"
    fresh.mkdir()
    shutil.copytree(run / "data", fresh / "data")
    shutil.copytree(run / "tokenizer", fresh / "tokenizer")
    with pytest.raises(ConanError, match="pretrain has not finished"):
        run_stage(cfg, "sft", fresh, progress=False)
