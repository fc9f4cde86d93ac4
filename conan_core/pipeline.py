"""``conan run``: the whole recipe, end to end, resumable.

data → tokenizer → pretrain → sft → weak (soft mask) → mine → supervised (CLR + DHNM + CoSENT +
MRL) → eval (next to BM25) → export → report. Each step leaves a marker in the run directory
(stage ``DONE`` files, ``mine/DONE``, ``eval/metrics.json``, ``export/DONE``), so re-running the
same command skips what is finished and resumes an interrupted stage from its last checkpoint.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from conan_core.config import STAGES, RunConfig, dump_config, resolve
from conan_core.errors import ConanError


class RunDirMismatch(ConanError):
    """The run directory holds a run with a different config."""


def check_run_dir(cfg: RunConfig, run_dir: Path) -> None:
    """Refuse to resume a run directory whose resolved config differs (names the changed fields)."""
    import yaml

    path = run_dir / "config.yaml"
    if not path.exists():
        return
    old = yaml.safe_load(path.read_text(encoding="utf-8"))
    new = json.loads(json.dumps(resolve(cfg)))
    diffs = list(_diff(old, new, ""))
    if diffs:
        shown = "; ".join(f"{p}: {a!r} -> {b!r}" for p, a, b in diffs[:8])
        raise RunDirMismatch(
            f"{run_dir} holds a run with another config ({shown}). Use a new --out directory, "
            "or delete the old one to start over.")


def _diff(a: Any, b: Any, path: str):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            yield from _diff(a.get(key), b.get(key), f"{path}.{key}" if path else key)
    elif a != b:
        yield path, a, b


def run_pipeline(cfg: RunConfig, run_dir: str | Path, *, progress: bool = True,
                 stages: list[str] | None = None) -> dict:
    """Run (or resume) every enabled step of ``cfg`` in ``run_dir``; returns the summary dict."""
    from conan_core.builder import build_pipeline
    from conan_core.train.prepare import prepare_run
    from conan_core.train.stages import run_stage

    build_pipeline(cfg)  # every key and field checked before anything is written
    run_dir = Path(run_dir)
    check_run_dir(cfg, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run_dir / "config.yaml")
    wanted = set(stages or ["data", *STAGES, "mine", "eval", "export", "report"])
    summary: dict[str, Any] = {"run_dir": str(run_dir), "stages": {}}
    t0 = time.perf_counter()

    prep = prepare_run(cfg, run_dir)
    summary["prepare"] = prep

    for stage in ("pretrain", "sft", "weak"):
        if stage in wanted and getattr(cfg, stage).enabled:
            summary["stages"][stage] = run_stage(cfg, stage, run_dir, resume=True, progress=progress)
            if summary["stages"][stage].get("preempted"):
                return _preempted(summary, stage)

    if "mine" in wanted and cfg.mine.enabled and cfg.supervised.enabled:
        summary["mine"] = mine_step(cfg, run_dir, progress=progress)

    if "supervised" in wanted and cfg.supervised.enabled:
        summary["stages"]["supervised"] = run_stage(cfg, "supervised", run_dir, resume=True, progress=progress)
        if summary["stages"]["supervised"].get("preempted"):
            return _preempted(summary, "supervised")

    if "eval" in wanted and cfg.eval.enabled:
        summary["eval"] = eval_step(cfg, run_dir)

    if "export" in wanted and cfg.export.enabled:
        summary["export"] = export_step(cfg, run_dir)

    summary["seconds"] = round(time.perf_counter() - t0, 1)
    if "report" in wanted:
        from conan_core.report import write_report

        write_report(cfg, run_dir, summary)
    return summary


def _preempted(summary: dict, stage: str) -> dict:
    """SIGTERM: the stage committed a checkpoint and stopped; the next run resumes it."""
    import sys

    print(f"preempted during {stage}: a checkpoint is committed; re-run the same command to resume",
          file=sys.stderr)
    summary["preempted"] = stage
    return summary


def mine_step(cfg: RunConfig, run_dir: Path, *, progress: bool = True) -> dict:
    """Mine a candidate pool for the supervised queries with the weak-stage model (RECIPE §4)."""
    from conan_core.embedder import Embedder
    from conan_core.miners.mining import mine_pool
    from conan_core.train.data import supervised_examples

    out = run_dir / "mine"
    done = out / "DONE"
    if done.exists():
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    source_stage = next((s for s in ("weak", "sft", "pretrain") if (run_dir / s / "DONE").exists()), None)
    if source_stage is None:
        raise ConanError(f"mine: no finished stage in {run_dir} to encode with (run weak first)")
    embedder = Embedder.load(run_dir / source_stage / "final")
    queries, positives, corpus = supervised_examples(cfg, run_dir)

    def encode(texts):
        return embedder.encode(texts, batch_size=cfg.mine.batch_size, show_progress=progress)

    pool = mine_pool(encode, queries, positives, corpus, cfg.mine.top_k, index_kind=cfg.mine.index)
    out.mkdir(parents=True, exist_ok=True)
    pool.save(out / "pool.jsonl")
    info = {"queries": len(queries), "corpus": len(corpus), "top_k": cfg.mine.top_k,
            "encoder": source_stage, "seconds": round(time.perf_counter() - t0, 1)}
    _write_json_atomic(done, info)
    return info


def eval_step(cfg: RunConfig, run_dir: Path) -> dict:
    """Every configured evaluator on the held-out data, in-domain and (when the data has
    ``eval/out_of_domain/``) out-of-domain, model next to BM25 (eval/metrics.json)."""
    from conan_core.embedder import Embedder
    from conan_core.eval.report import evaluate_domains, read_metrics, write_metrics

    path = run_dir / "eval" / "metrics.json"
    if path.exists():
        return read_metrics(path)
    embedder = Embedder.load(run_dir)
    data_dir = Path(cfg.data.dir) if cfg.data.dir else run_dir / "data"
    results = evaluate_domains(embedder, data_dir / "eval", cfg.eval.evaluators, missing="skip",
                               batch_size=cfg.eval.batch_size, log=print)
    write_metrics(results, path)
    return results


def export_step(cfg: RunConfig, run_dir: Path) -> dict:
    from conan_core.export import export_run

    out = run_dir / "export"
    if (out / "DONE").exists():
        return json.loads((out / "DONE").read_text())
    export_run(run_dir, out)
    info = {"path": str(out)}
    _write_json_atomic(out / "DONE", info)
    return info


def _write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float), encoding="utf-8")
    tmp.replace(path)
