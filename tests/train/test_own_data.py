"""Training on one's own data: the weak and supervised stages read Hugging Face datasets saved to
disk (and STS pairs from a CSV file through datasets), a SIGKILL during the supervised stage
resumes bit-exactly, and a run whose stages name their own sources needs no data.dir."""

from __future__ import annotations

import signal

import pytest
import torch

from conan_core.config import load_config, validate_dict
from conan_core.train.checkpoint import load_tensors
from tests.train.harness import copy_run, run_cli

datasets = pytest.importorskip("datasets")


def _rows(path, kind):
    """The samples of a demo shard set, read once in order."""
    from conan_core.train.data import one_pass

    return list(one_pass({"type": f"{kind}_shards", "path": str(path)}))


def _as_datasets(data, out):
    """The demo's sft and supervised pairs as saved datasets in FlagEmbedding's layout (pos as a
    list, task and lang columns) and its STS pairs as a CSV file with the STS-benchmark header."""
    import csv

    datasets.disable_progress_bars()
    for split in ("sft", "supervised"):
        rows = [{"query": s["query"], "pos": [s["pos"]], "neg": list(s["neg"]), "task": s["task"], "lang": s["lang"]}
                for s in _rows(data / split, "pair")]
        datasets.Dataset.from_list(rows).save_to_disk(str(out / split))
    with open(out / "sts.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence1", "sentence2", "score"])
        writer.writerows([s["s1"], s["s2"], s["score"]] for s in _rows(data / "sts", "sts"))
    return out


def _sets(own, cache):
    return (f"weak.source={{type: hf_dataset, path: {own / 'sft'}, kind: pairs}}",
            f"supervised.source={{type: hf_dataset, path: {own / 'supervised'}, kind: pairs, rows_per_unit: 64, "
            "tasks: [retrieval, clr, classification]}",
            f"supervised.sts_source={{type: hf_dataset, path: {own / 'sts.csv'}, kind: sts, cache_dir: {cache}}}")


def _args(run):
    return ["supervised", str(run / "config.yaml"), "--run-dir", str(run), "--no-progress"]


@pytest.mark.slow
def test_weak_and_supervised_from_saved_datasets_resume_exactly(trained_run, tmp_path):
    from conan_core.train.stages import run_stage

    _, run, _ = trained_run
    own = _as_datasets(run / "data", tmp_path / "own")
    sets = _sets(own, tmp_path / "cache")
    base = copy_run(run, tmp_path / "base", ("pretrain", "sft"), sets)
    cfg = load_config(base / "config.yaml")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses below (OMP_NUM_THREADS=1)
    try:
        weak = run_stage(cfg, "weak", base, progress=False)
        ref = copy_run(base, tmp_path / "ref", ("pretrain", "sft", "weak"), ())
        out = copy_run(base, tmp_path / "out", ("pretrain", "sft", "weak"), ())
        run_stage(load_config(ref / "config.yaml"), "supervised", ref, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert weak["steps"] == cfg.weak.steps and weak["counters"]["samples"] > 0
    consumed = (base / "weak" / "steps.jsonl").read_text()
    assert f'"{own / "sft"}","row-' in consumed  # samples are rows of the saved dataset

    killed = run_cli(_args(out), fault="kill@step=14:micro=1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed = run_cli(_args(out))
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resumed from" in resumed.stderr and "step-000010" in resumed.stderr

    a = load_tensors(ref / "supervised" / "final" / "model.safetensors")
    b = load_tensors(out / "supervised" / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps_ref = (ref / "supervised" / "steps.jsonl").read_text().replace(str(ref), "RUN")
    steps_out = (out / "supervised" / "steps.jsonl").read_text().replace(str(out), "RUN")
    assert steps_ref == steps_out
    assert f'"{own / "sts.csv"}","row-' in steps_ref  # the STS batches came from the CSV file
    assert f'"{own / "supervised"}","row-' in steps_ref


def test_own_sources_need_no_data_dir_and_missing_ones_are_named(tmp_path):
    raw = {"data": {"demo": False}, "sft": {"enabled": False},
           "pretrain": {"source": {"type": "jsonl", "path": str(tmp_path / "text.jsonl")}},
           "weak": {"source": {"type": "jsonl", "path": str(tmp_path / "pairs.jsonl"), "kind": "pairs"}}}
    cfg, issues = validate_dict(raw)
    assert cfg is None and [i.path for i in issues] == ["supervised.source"]
    message = str(issues[0])
    assert "data.demo is false and data.dir is unset" in message and "kind: pairs" in message
    assert "supervised.enabled: false" in message and "'pretrain'" not in message  # no dump of the config
    raw["supervised"] = {"source": {"type": "hf_dataset", "path": str(tmp_path / "triplets"), "kind": "pairs"}}
    cfg, issues = validate_dict(raw)
    assert issues == [] and cfg.data.dir is None
