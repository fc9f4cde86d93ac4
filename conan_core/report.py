"""The end of a run: metrics.json, report.md, PNG plots and the printed summary table.

Every number comes from files the run wrote (stage DONE markers, metrics.jsonl, eval/metrics.json,
provenance.json). ``report.md`` opens with how the run was made (command, preset and overrides,
versions, plugins, git commit) and the config's difference from its preset.
"""

from __future__ import annotations

import json
import re
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

    from conan_core import provenance as prov

    run_dir = Path(run_dir)
    eval_results = summary.get("eval") or _load_json(run_dir / "eval" / "metrics.json")
    origin = prov.read(run_dir)
    recorded = origin is not None
    if origin is None:  # a run made before provenance.json existed: describe what is known now
        origin = prov.collect(cfg)
    metrics = {"stages": stage_rows(run_dir), "eval": eval_results or {},
               "eval_by_domain": by_domain(eval_results or {}),
               "mine": summary.get("mine") or _load_json(run_dir / "mine" / "DONE"),
               "seconds": summary.get("seconds"), "provenance": origin}
    from conan_core.fsio import atomic_write_text

    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2, default=float))
    plots = make_plots(cfg, run_dir, eval_results or {})
    table = format_summary(run_dir, eval_results)
    full = format_summary(run_dir, eval_results, per_language=True)
    lines = [f"# Run report: {cfg.name}", "", f"Run directory: `{run_dir}`; total time "
             f"{summary.get('seconds', '-')} s.", ""]
    lines += provenance_lines(cfg, origin, recorded)
    lines += ["## Results", ""]
    if any(k.startswith("out_of_domain/") for k in (eval_results or {})):
        lines += ["Evaluation: `in_domain` = held-out items of the sources training used; `out_of_domain` = "
                  "sources no training split holds (see the data's demo_summary.json, `held_out`). BM25 runs on "
                  "the same queries and documents.", ""]
    lines += ["```", full, "```", ""]
    lines += mine_section(metrics.get("mine") or {})
    lines += [f"![{p.stem}](plots/{p.name})" for p in plots]
    report = run_dir / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    print(table)
    return report


#: rows of the config-difference table shown before "+N more"
DIFF_ROWS = 60


def provenance_lines(cfg: RunConfig, origin: dict, recorded: bool = True) -> list[str]:
    """The report's opening section: command, preset and overrides, versions, plugins, git commit,
    then the table of fields where the config differs from its preset."""
    from conan_core.provenance import config_diff

    preset = origin.get("preset")
    overrides = origin.get("overrides") or []
    git = origin.get("git")
    if git:
        source = f"git commit `{git['commit']}`" + (" with uncommitted changes" if git.get("dirty") else "")
    else:
        source = "not a git checkout (no commit recorded)"
    keys = origin.get("plugin_keys") or []
    lines = ["## How this run was made", ""]
    if not recorded:
        lines += ["(The run predates `provenance.json`: what follows describes this report's process.)", ""]
    lines += [f"- command: `{origin.get('command') or '-'}`",
              f"- config: {origin.get('config') or 'built in Python'}"
              + (f" (preset `{preset}`)" if preset and origin.get("config") != f"preset {preset}" else ""),
              "- command-line overrides: " + (", ".join(f"`{o}`" for o in overrides) if overrides else "none"),
              "- versions: " + ", ".join(f"{k} {v}" for k, v in (origin.get("versions") or {}).items()),
              "- plugins installed: " + (", ".join(origin.get("plugins") or []) or "none")
              + "; plugin keys this config uses: " + (", ".join(f"`{k}`" for k in keys) if keys else "none"),
              f"- conan_core source: {source}", ""]
    diffs = config_diff(cfg, preset)
    against = f"preset `{preset}`" if preset else "the defaults of every field (no preset)"
    if not diffs:
        return lines + [f"The config equals {against}.", ""]
    lines += [f"Config against {against} ({len(diffs)} field(s) differ, overrides included):", "",
              f"| field | {'preset ' + preset if preset else 'default'} | this run |", "|---|---|---|"]
    for path, old, new in diffs[:DIFF_ROWS]:
        lines.append(f"| `{path}` | {_cell(old)} | {_cell(new)} |")
    if len(diffs) > DIFF_ROWS:
        lines.append(f"| (+{len(diffs) - DIFF_ROWS} more) | | |")
    return lines + [""]


def _cell(value: Any) -> str:
    text = json.dumps(value, default=str)
    text = text if len(text) <= 80 else text[:77] + "..."
    return text.replace("|", "\\|")


def _load_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


#: metrics.jsonl names that are parts of a stage's loss (Matryoshka InfoNCE per dim, CBB's InfoNCE,
#: the supervised stage's CoSENT)
LOSS_PART = re.compile(r"^(loss@\d+|info_nce|cosent)$")


def make_plots(cfg: RunConfig, run_dir: Path, eval_results: dict) -> list[Path]:
    """Loss per stage with its parts, evaluation during training (in domain, out of domain, loss),
    alpha(t) with the mask at a few steps, DHNM replacements, per-language recall."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    made = [_save(loss_figure(cfg, run_dir), out_dir / "loss.png")]

    fig = eval_during_training_figure(run_dir)
    if fig is not None:
        made.append(_save(fig, out_dir / "eval_during_training.png"))

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


def moving_mean(values: list[float], window: int) -> list[float]:
    """The mean of each value and the ``window - 1`` before it (fewer at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def loss_figure(cfg: RunConfig, run_dir: Path):
    """One panel per stage: the loss of every step (thin) and its mean over ``log_every`` steps; in
    a stage whose loss has parts (InfoNCE at each Matryoshka dim, CoSENT) each part is its own
    curve, drawn at the steps it occurs, so a part added every few steps shows as itself instead
    of a zigzag in the total."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(STAGES), figsize=(4 * len(STAGES), 3.4))
    for ax, stage in zip(axes, STAGES):
        rows = [r for r in read_jsonl(run_dir / stage / "metrics.jsonl") if _is_number(r.get("loss"))]
        ax.set_title(stage)
        ax.set_xlabel("step")
        if not rows:
            continue
        steps = [r["step"] for r in rows]
        losses = [float(r["loss"]) for r in rows]
        window = max(1, int(getattr(cfg, stage).log_every))
        ax.plot(steps, losses, color="0.75", linewidth=0.6, label="loss (each step)")
        ax.plot(steps, moving_mean(losses, window), color="black", linewidth=1.2, label=f"loss (mean of {window})")
        parts = [k for k in dict.fromkeys(k for r in rows for k in r) if LOSS_PART.match(k)]
        for part in parts:
            hits = [r for r in rows if _is_number(r.get(part))]
            ax.plot([r["step"] for r in hits], [float(r[part]) for r in hits], linewidth=1.0,
                    marker="." if len(hits) < len(rows) else None, markersize=3, label=part)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("loss")
    fig.tight_layout()
    return fig


def eval_curves(run_dir: Path, stage: str) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Evaluation during training of ``stage`` from its metrics.jsonl: per task, the first metric
    the evaluator reports (nDCG@10, Recall@20, Spearman, accuracy), ``{"in_domain": [(step,
    value)], "out_of_domain": [...], "metric": name}``."""
    rows = read_jsonl(run_dir / stage / "metrics.jsonl")
    tasks: dict[str, dict] = {}
    for row in rows:
        for key, value in row.items():
            if not key.startswith("eval/") or key == "eval/seconds" or not _is_number(value):
                continue
            name = key[len("eval/"):]
            domain = "out_of_domain" if name.startswith("out_of_domain/") else "in_domain"
            task, _, metric = name[len("out_of_domain/"):].partition("/") if domain == "out_of_domain" \
                else name.partition("/")
            entry = tasks.setdefault(task, {"metric": metric, "in_domain": [], "out_of_domain": []})
            if metric == entry["metric"]:
                entry[domain].append((int(row["step"]), float(value)))
    return tasks


def eval_during_training_figure(run_dir: Path):
    """Overfitting made visible: for each stage that evaluated while training, one panel per task
    with its metric in domain and out of domain over the steps and the training loss (mean over
    the steps since the previous evaluation) on a second axis; None when no stage evaluated."""
    stages = {stage: eval_curves(run_dir, stage) for stage in STAGES}
    stages = {s: t for s, t in stages.items() if t}
    if not stages:
        return None
    import matplotlib.pyplot as plt

    width = max(len(t) for t in stages.values())
    fig, axes = plt.subplots(len(stages), width, figsize=(4.2 * width, 3.3 * len(stages)), squeeze=False)
    for row, (stage, tasks) in enumerate(stages.items()):
        rows = [r for r in read_jsonl(run_dir / stage / "metrics.jsonl") if _is_number(r.get("loss"))]
        for col in range(width):
            ax = axes[row][col]
            if col >= len(tasks):
                ax.axis("off")
                continue
            task, entry = list(tasks.items())[col]
            for domain, style in (("in_domain", "-o"), ("out_of_domain", "--s")):
                points = entry[domain]
                if points:
                    ax.plot([p[0] for p in points], [p[1] for p in points], style, markersize=3,
                            label=domain.replace("_", " "))
            ax.set_title(f"{stage}: {task} {entry['metric']}", fontsize=9)
            ax.set_xlabel("step")
            twin = ax.twinx()
            marks = [p[0] for p in (entry["in_domain"] or entry["out_of_domain"])]
            means, start = [], 0
            for step in marks:  # training loss averaged over each evaluation interval
                window = [float(r["loss"]) for r in rows if start < r["step"] <= step]
                means.append(sum(window) / len(window) if window else float("nan"))
                start = step
            twin.plot(marks, means, ":", color="0.4", label="training loss")
            twin.set_ylabel("training loss", fontsize=8)
            lines = ax.get_legend_handles_labels()
            more = twin.get_legend_handles_labels()
            ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7)
    fig.tight_layout()
    return fig


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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

