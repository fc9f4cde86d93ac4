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

from conan_core.config import STAGES, RunConfig, dump_config
from conan_core.errors import ConanError
from conan_core.fsio import atomic_write_json
from conan_core.registries import REGISTRIES
from conan_core.rundir import RunLock, check_run_dir

#: the steps of `conan run`, in order (`--stages` takes a comma list of them)
STEPS = ("data", *STAGES, "mine", "eval", "export", "report")


def check_steps(steps: list[str] | None) -> list[str]:
    """``steps`` when every name is a step of :data:`STEPS`, else :class:`ConanError` with a suggestion."""
    if steps is None:
        return list(STEPS)
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        from conan_core.errors import close_matches

        bad = unknown[0]
        hint = close_matches(bad, STEPS)
        raise ConanError(f"--stages: unknown step {bad!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                         + f"; valid: {', '.join(STEPS)}")
    if not steps:
        raise ConanError(f"--stages is empty; valid steps: {', '.join(STEPS)}")
    return list(steps)


def run_pipeline(cfg: RunConfig, run_dir: str | Path, *, progress: bool = True,
                 stages: list[str] | None = None, fallback_checkpoint: bool = False) -> dict:
    """Run (or resume) every enabled step of ``cfg`` in ``run_dir``; returns the summary dict.

    ``summary["preempted"]`` names the stage a SIGTERM stopped (a checkpoint is committed; the same
    call resumes). The run directory is locked for the whole call (:class:`~conan_core.rundir.RunLock`).
    """
    from conan_core.builder import build_pipeline

    wanted = set(check_steps(stages))
    build_pipeline(cfg)  # every key and field checked before anything is written
    run_dir = Path(run_dir)
    with RunLock(run_dir):
        check_run_dir(cfg, run_dir)
        return _run_locked(cfg, run_dir, wanted, progress=progress, fallback_checkpoint=fallback_checkpoint)


def _run_locked(cfg: RunConfig, run_dir: Path, wanted: set[str], *, progress: bool,
                fallback_checkpoint: bool) -> dict:
    from conan_core.train.prepare import prepare_run
    from conan_core.train.stages import run_stage

    from conan_core import provenance

    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run_dir / "config.yaml")
    provenance.write_once(cfg, run_dir)
    summary: dict[str, Any] = {"run_dir": str(run_dir), "stages": {}}
    t0 = time.perf_counter()

    prep = prepare_run(cfg, run_dir, progress=progress)
    summary["prepare"] = prep

    for stage in ("pretrain", "sft", "weak"):
        if stage in wanted and getattr(cfg, stage).enabled:
            summary["stages"][stage] = run_stage(cfg, stage, run_dir, resume=True, progress=progress,
                                                 fallback_checkpoint=fallback_checkpoint)
            if summary["stages"][stage].get("preempted"):
                return _preempted(summary, stage)

    if "mine" in wanted and cfg.mine.enabled and cfg.supervised.enabled:
        summary["mine"] = mine_step(cfg, run_dir, progress=progress)

    if "supervised" in wanted and cfg.supervised.enabled:
        summary["stages"]["supervised"] = run_stage(cfg, "supervised", run_dir, resume=True, progress=progress,
                                                    fallback_checkpoint=fallback_checkpoint)
        if summary["stages"]["supervised"].get("preempted"):
            return _preempted(summary, "supervised")
        first = summary["stages"]["supervised"].get("counters", {}).get("first_step_mean_negative_rank")
        if first is not None and isinstance(summary.get("mine"), dict):
            summary["mine"]["first_step_mean_negative_rank"] = first

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
            "encoder": source_stage, "seconds": round(time.perf_counter() - t0, 1),
            **_negatives_report(cfg, pool)}
    atomic_write_json(done, info, default=float)
    return info


def _negatives_report(cfg: RunConfig, pool) -> dict:
    """What the supervised miner starts with on this pool (:mod:`conan_core.miners.report`)."""
    from conan_core.builder import build_miner_plan
    from conan_core.miners.report import initial_negatives_report

    plan = build_miner_plan(cfg)
    if plan is None or not REGISTRIES["miners"].get(plan.spec["type"]).needs_pool:
        return {}
    return initial_negatives_report(plan.build(pool=pool), pool)


def eval_step(cfg: RunConfig, run_dir: Path) -> dict:
    """Every configured evaluator on the held-out data, in-domain and (when the data has
    ``eval/out_of_domain/``) out-of-domain, model next to BM25 (eval/metrics.json)."""
    from conan_core.embedder import Embedder
    from conan_core.eval.report import evaluate_domains, read_metrics, write_metrics

    path = run_dir / "eval" / "metrics.json"
    if path.exists():
        return read_metrics(path)
    from conan_core.train.data import eval_root

    embedder = Embedder.load(run_dir)
    results = evaluate_domains(embedder, eval_root(cfg, run_dir), cfg.eval.evaluators, missing="skip",
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
    atomic_write_json(out / "DONE", info, default=float)
    return info
