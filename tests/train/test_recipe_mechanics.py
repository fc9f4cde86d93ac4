"""The recipe's mechanisms as the stages wire them: DHNM v1 re-mines with the current model,
the weak stage's teacher can be any sentence-transformers directory, and the mining report
describes the negatives the supervised stage starts with."""

from __future__ import annotations

import json

import pytest
import torch

from conan_core.builder import build_miner_plan, build_stage
from conan_core.config import load_config
from conan_core.miners.pool import CandidatePool
from conan_core.miners.report import initial_negatives_report
from conan_core.tokenizer import load_tokenizer
from conan_core.train import distributed as D
from conan_core.train.stages import supervised, weak
from conan_core.train.stages.common import StageContext, hidden_size, start_model
from conan_core.train.teacher import TeacherError, resolve_teacher_path
from tests.train.harness import copy_run

pytestmark = pytest.mark.slow


def _wire(module, stage, run):
    cfg = load_config(run / "config.yaml")
    ctx = StageContext(cfg=cfg, stage=stage, run_dir=run, env=D.DistEnv(), tokenizer=load_tokenizer(run / "tokenizer"))
    model = start_model(ctx)
    components = build_stage(cfg, stage, hidden_size(model))
    return cfg, components, module.wire(ctx, model, components)


def test_dhnm_v1_re_encodes_with_the_current_model_and_searches_again(trained_run, tmp_path):
    _, run, _ = trained_run
    out = copy_run(run, tmp_path / "r", ("pretrain", "sft", "weak"),
                   ("supervised.miner={type: dynamic_v1, interval: 1}", "mine.top_k=30"))
    cfg, _, wiring = _wire(supervised, "supervised", out)
    stream = wiring.stream
    miner = stream.miner
    try:
        batch = stream.next_batch()
        ids = batch["example_ids"]
        n = miner.num_negatives
        stream.observe({"example_ids": ids, "neg_scores": torch.full((len(ids), n), 0.6)})  # S_init
        assert miner.stats()["remined_examples_total"] == 0
        stream.observe({"example_ids": ids, "neg_scores": torch.full((len(ids), n), 0.2)})  # no longer hard
        stats = miner.stats()
        assert stats["remined_examples_total"] == len(set(ids))
        remine = miner.remine_fn
        assert remine.calls == 1 and remine.seconds > 0  # one fresh search with the weights being trained
        fresh = miner._overrides[ids[0]]
        assert len(fresh[ids[0]]) == cfg.mine.top_k  # the new candidates come from that search
        second = miner.negatives_for([ids[0]])[0]
        elig = miner.eligible(ids[0])
        assert [c.id for c in second] == [c.id for c in elig[n:2 * n]]  # the k=2 window of the fresh ranking
    finally:
        stream.close()


def test_a_sentence_transformers_directory_is_a_teacher(trained_run, tmp_path, caplog):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from tokenizers import Tokenizer

    _, run, _ = trained_run
    torch.manual_seed(0)
    static = StaticEmbedding(Tokenizer.from_file(str(run / "tokenizer" / "tokenizer.json")), embedding_dim=16)
    teacher_dir = tmp_path / "st-teacher"
    SentenceTransformer(modules=[static]).save(str(teacher_dir))
    out = copy_run(run, tmp_path / "r", ("pretrain", "sft"), (f"weak.teacher={teacher_dir}",))
    with caplog.at_level("INFO", logger="conan_core.train"):
        _, _, wiring = _wire(weak, "weak", out)
    wiring.stream.close()
    record = json.loads((out / "weak" / "teacher.json").read_text())
    assert record["teacher"] == str(teacher_dir) and record["scored"] > 0
    assert 0 < record["dropped_count"] < record["scored"]  # random static embeddings: some pairs below 0.4
    assert "dropped" in caplog.text and "cosine(query, positive) is below 0.40" in caplog.text


def test_teacher_specs_name_what_is_wrong(tmp_path):
    with pytest.raises(TeacherError, match="is not a directory"):
        resolve_teacher_path(str(tmp_path / "absent"))
    with pytest.raises(TeacherError, match="pip install no-such-teacher-pkg"):
        resolve_teacher_path("package:no_such_teacher_pkg/model")
    with pytest.raises(TeacherError, match="no directory"):
        resolve_teacher_path("package:conan_core/no_such_dir")
    assert resolve_teacher_path("package:conan_core/presets").is_dir()


def test_mining_report_is_the_first_negatives_of_every_example():
    cfg = load_config("tiny")
    pool = CandidatePool({f"q{i}": [(f"d{i}_{r}", f"doc {i} {r}", 0.9 - 0.01 * r) for r in range(1, 41)]
                          for i in range(5)}, positive_scores={f"q{i}": 0.95 for i in range(5)})
    report = initial_negatives_report(build_miner_plan(cfg).build(pool=pool), pool)
    assert report["examples"] == 5 and report["negatives_per_example"] == 7
    assert report["mean_negative_rank"] == 14.0  # ranks 11..17: ranks 1-10 never used, no score filter
    assert report["fallback_fraction"] == 0.0 and report["excluded_by_margin"] == 0
    gaps = [0.95 - (0.9 - 0.01 * r) for r in range(11, 18)]
    assert report["mean_score_gap"] == pytest.approx(sum(gaps) / len(gaps))
    assert sum(report["score_gap_hist"]["counts"]) == 35
