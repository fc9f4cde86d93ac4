"""The end of a run: metrics.json, report.md, PNG plots and the printed summary table.

Every number comes from files the run wrote (stage DONE markers, metrics.jsonl, eval/metrics.json).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conan_core.config import STAGES, RunConfig
from conan_core.eval.base import is_count


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            rows.append(json.loads(line))
    return rows


def stage_rows(run_dir: Path) -> list[dict]:
    """One row per finished stage: stage, steps, final loss, seconds (from its DONE marker)."""
    rows = []
    for stage in (*STAGES[:3], "mine", STAGES[3]):
        done = run_dir / stage / "DONE"
        if not done.exists():
            continue
        info = json.loads(done.read_text())
        rows.append({"stage": stage, "steps": info.get("steps", "-"),
                     "final_loss": info.get("final_loss"), "seconds": info.get("seconds")})
    return rows


def metric_rows(eval_results: dict) -> list[tuple[str, str, str, float, float | None]]:
    """(task, domain, metric, model value, BM25 value) for every model metric.

    Rows are grouped by task (in the order tasks first appear) and metric, the in-domain row of a
    metric directly above its out-of-domain row; metrics only one domain has follow in its order.
    """
    from conan_core.eval.report import DOMAINS, by_domain

    grouped = by_domain(eval_results)
    tasks: list[str] = []
    for domain in DOMAINS:
        tasks += [t for t in grouped.get(domain, {}) if t not in tasks]
    out = []
    for task in tasks:
        per_domain = {d: grouped.get(d, {}).get(task) or {} for d in DOMAINS}
        keys: list[str] = []
        for metrics in per_domain.values():
            keys += [k for k, v in metrics.items() if k not in keys and not k.startswith("bm25/")
                     and isinstance(v, (int, float)) and not is_count(k)]
        for key in keys:
            for domain, metrics in per_domain.items():
                if isinstance(metrics.get(key), (int, float)):
                    out.append((task, domain, key, float(metrics[key]), _as_float(metrics.get(f"bm25/{key}"))))
    return out


def _as_float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def format_summary(run_dir: Path, eval_results: dict | None, *, per_language: bool = False) -> str:
    """The stage table and the eval table: every metric in-domain and out-of-domain, the model
    next to BM25 on the same queries and documents; per-language rows on request."""
    lines = [f"{'stage':<12}{'steps':>7}{'final loss':>12}{'time (s)':>10}"]
    for row in stage_rows(run_dir):
        loss = "-" if row["final_loss"] is None else f"{row['final_loss']:.4f}"
        secs = "-" if row["seconds"] is None else f"{row['seconds']:.1f}"
        lines.append(f"{row['stage']:<12}{row['steps']!s:>7}{loss:>12}{secs:>10}")
    if eval_results:
        lines.append("")
        lines.append(f"{'eval':<16}{'domain':<15}{'metric':<24}{'model':>9}{'BM25':>9}")
        for task, domain, key, value, bm25 in metric_rows(eval_results):
            if key.startswith("lang/") and not per_language:
                continue
            ref = "-" if bm25 is None else f"{bm25:.4f}"
            lines.append(f"{task:<16}{domain:<15}{key:<24}{value:>9.4f}{ref:>9}")
    return "\n".join(lines)


def write_report(cfg: RunConfig, run_dir: Path, summary: dict) -> Path:
    """Write metrics.json, plots/*.png and report.md; print the summary table.

    ``metrics.json`` holds ``eval`` (flat: in-domain tasks by name, out-of-domain ones as
    ``out_of_domain/<task>``, as in ``eval/metrics.json``) and ``eval_by_domain`` (the same numbers
    as ``{"in_domain": {task: ...}, "out_of_domain": {task: ...}}``).
    """
    from conan_core.eval.report import by_domain

    run_dir = Path(run_dir)
    eval_results = summary.get("eval") or _load_json(run_dir / "eval" / "metrics.json")
    metrics = {"stages": stage_rows(run_dir), "eval": eval_results or {},
               "eval_by_domain": by_domain(eval_results or {}),
               "mine": summary.get("mine") or _load_json(run_dir / "mine" / "DONE"),
               "seconds": summary.get("seconds")}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float), encoding="utf-8")
    plots = make_plots(cfg, run_dir, eval_results or {})
    table = format_summary(run_dir, eval_results)
    full = format_summary(run_dir, eval_results, per_language=True)
    lines = [f"# Run report: {cfg.name}", "", f"Run directory: `{run_dir}`; total time "
             f"{summary.get('seconds', '-')} s.", ""]
    if any(k.startswith("out_of_domain/") for k in (eval_results or {})):
        lines += ["Evaluation: `in_domain` = held-out items of the sources training used; `out_of_domain` = "
                  "sources no training split holds (see the data's demo_summary.json, `held_out`). BM25 runs on "
                  "the same queries and documents.", ""]
    lines += ["```", full, "```", ""]
    lines += mine_section(metrics.get("mine") or {})
    lines += [f"![{p.stem}](plots/{p.name})" for p in plots]
    report = run_dir / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(table)
    return report


def _load_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def make_plots(cfg: RunConfig, run_dir: Path, eval_results: dict) -> list[Path]:
    """Loss per stage, alpha(t) with the mask at a few steps, DHNM replacements, per-language recall."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    made = []

    fig, axes = plt.subplots(1, len(STAGES), figsize=(4 * len(STAGES), 3))
    for ax, stage in zip(axes, STAGES):
        rows = [r for r in read_jsonl(run_dir / stage / "metrics.jsonl") if "loss" in r]
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows])
        ax.set_title(stage)
        ax.set_xlabel("step")
    axes[0].set_ylabel("loss")
    fig.tight_layout()
    made.append(_save(fig, out_dir / "loss.png"))

    fig = soft_mask_figure(cfg)
    if fig is not None:
        made.append(_save(fig, out_dir / "soft_mask.png"))

    rows = [r for r in read_jsonl(run_dir / "supervised" / "metrics.jsonl") if "negatives_replaced" in r]
    if rows:
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.plot([r["step"] for r in rows], [r["negatives_replaced"] for r in rows])
        ax.set_xlabel("supervised step")
        ax.set_ylabel("negatives replaced")
        ax.set_title("dynamic hard negative mining")
        fig.tight_layout()
        made.append(_save(fig, out_dir / "dhnm_replacements.png"))

    fig = per_language_figure(eval_results)
    if fig is not None:
        made.append(_save(fig, out_dir / "per_language_recall.png"))
    return made


def soft_mask_figure(cfg: RunConfig):
    """alpha(t) of the weak stage and the soft mask M[i, j] (query row i, key column j, 1-based,
    a 16-token sequence) at five steps, with a colour bar and the schedule's name; None when the
    weak stage does not use the ``soft`` mask."""
    if not (cfg.weak.enabled and cfg.weak.mask.get("type") == "soft"):
        return None
    import matplotlib.pyplot as plt
    import torch

    from conan_core.masks.base import MaskContext
    from conan_core.registries import REGISTRIES

    mask = REGISTRIES["masks"].build(cfg.weak.mask)
    total = max(cfg.weak.steps, 1)
    steps = [0, total // 4, total // 2, 3 * total // 4, total]
    # constrained layout leaves room for the colour bar and its label
    fig, axes = plt.subplots(1, len(steps) + 1, figsize=(3 * (len(steps) + 1) + 1, 3.6), layout="constrained")
    ts = list(range(total + 1))
    axes[0].plot(ts, [mask.alpha(t, total) for t in ts])
    axes[0].set_title("alpha(t)")
    axes[0].set_xlabel("weak step")
    axes[0].set_ylabel("alpha")
    length = 16
    ticks = [0, length // 2 - 1, length - 1]
    image = None
    for ax, step in zip(axes[1:], steps):
        alpha = mask.alpha(step, total)
        m = mask.matrix(MaskContext(lengths=torch.tensor([length]), seq_len=length, alpha=alpha))[0]
        image = ax.imshow(m.numpy(), vmin=0, vmax=1, cmap="viridis")
        ax.set_title(f"step {step}, alpha {alpha:.2f}")
        ax.set_xlabel("key position j")
        ax.set_xticks(ticks, [str(t + 1) for t in ticks])
        ax.set_yticks(ticks, [str(t + 1) for t in ticks])
    axes[1].set_ylabel("query position i")
    fig.suptitle(f"soft mask M[i, j] during the weak stage; schedule: {schedule_name(cfg.weak.mask)}")
    fig.colorbar(image, ax=list(axes[1:]), shrink=0.9, label="M[i, j]: 0 closed, 1 open")
    return fig


def per_language_figure(eval_results: dict):
    """Cross-lingual Recall@20 per query language, the model's bar beside BM25's, one panel per
    domain (in-domain, out-of-domain); None when no result has per-language rows."""
    panels = _per_language(eval_results)
    if not panels:
        return None
    import matplotlib.pyplot as plt
    import numpy as np

    widths = [max(3.0, 0.45 * len(langs)) for langs, _, _ in panels.values()]
    fig, axes = plt.subplots(1, len(panels), figsize=(sum(widths) + 1, 3.6), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    for ax, (domain, (langs, model, bm25)) in zip(axes[0], panels.items()):
        x = np.arange(len(langs))
        ax.bar(x - 0.2, model, 0.4, label="model")
        ax.bar(x + 0.2, [np.nan if v is None else v for v in bm25], 0.4, label="BM25")
        ax.set_xticks(x, langs, rotation=90)
        ax.set_ylim(0, 1)
        ax.set_xlabel("query language")
        ax.set_title(f"{domain}: cross-lingual Recall@20", fontsize=10)
    axes[0][0].set_ylabel("Recall@20")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def schedule_name(mask_spec: dict) -> str:
    """The schedule of a soft-mask spec as ``key`` or ``key (field=value, ...)`` with the fields the
    spec sets."""
    schedule = mask_spec.get("schedule") or {}
    if isinstance(schedule, str):
        return schedule
    key = schedule.get("type", "linear")
    extra = ", ".join(f"{k}={v}" for k, v in schedule.items() if k != "type" and v is not None)
    return f"{key} ({extra})" if extra else key


def _per_language(eval_results: dict) -> dict[str, tuple[list[str], list[float], list[float | None]]]:
    """Per domain with cross-lingual results: (languages, model Recall@20, BM25 Recall@20)."""
    from conan_core.eval.report import by_domain

    out = {}
    for domain, tasks in by_domain(eval_results).items():
        metrics = tasks.get("cross_lingual") or {}
        langs = sorted(k.split("/")[1] for k in metrics if k.startswith("lang/") and k.endswith("/recall@20"))
        if langs:
            out[domain] = (langs, [float(metrics[f"lang/{lang}/recall@20"]) for lang in langs],
                           [_as_float(metrics.get(f"bm25/lang/{lang}/recall@20")) for lang in langs])
    return out


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def mine_section(mine: dict) -> list[str]:
    """``report.md`` lines on the hard negatives the supervised stage started with (empty when the
    run mined nothing)."""
    if not mine.get("mean_negative_rank"):
        return []
    hist = mine.get("score_gap_hist") or {}
    edges, counts = hist.get("edges") or [], hist.get("counts") or []
    busy = [(edges[i], edges[i + 1], c) for i, c in enumerate(counts) if c]
    lines = ["## Hard negatives", "",
             f"- pool: {mine.get('queries')} queries over {mine.get('corpus')} documents, top {mine.get('top_k')}, "
             f"encoded with the {mine.get('encoder')} model",
             f"- mean 1-based pool rank of every example's first negatives: {mine['mean_negative_rank']:.2f} "
             f"(median {mine.get('median_negative_rank')}; ranks 1-10 are never used)"]
    if mine.get("first_step_mean_negative_rank") is not None:
        lines.append(f"- mean rank of the negatives used in the supervised stage's first step: "
                     f"{mine['first_step_mean_negative_rank']:.2f}")
    lines.append(f"- score-filter fallback: {mine.get('fallback_fraction', 0.0):.3f} of the examples; excluded as "
                 f"equal to a positive: {mine.get('excluded_false_negatives', 0)}, by score filters: "
                 f"{mine.get('excluded_by_margin', 0)}")
    if mine.get("mean_score_gap") is not None:
        lines.append(f"- positive − negative score: mean {mine['mean_score_gap']:.3f}; histogram "
                     + ", ".join(f"[{lo:+.1f}, {hi:+.1f}): {c}" for lo, hi, c in busy))
    return lines + [""]

