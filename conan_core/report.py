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


def metric_rows(eval_results: dict) -> list[tuple[str, str, float, float | None]]:
    """(evaluator, metric, model value, BM25 value) for every model metric."""
    out = []
    for name, metrics in eval_results.items():
        for key, value in metrics.items():
            if key.startswith("bm25/") or not isinstance(value, (int, float)) or is_count(key):
                continue
            out.append((name, key, float(value), _as_float(metrics.get(f"bm25/{key}"))))
    return out


def _as_float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def format_summary(run_dir: Path, eval_results: dict | None, *, per_language: bool = False) -> str:
    """The stage table and the eval table (model next to BM25); per-language rows on request."""
    lines = [f"{'stage':<12}{'steps':>7}{'final loss':>12}{'time (s)':>10}"]
    for row in stage_rows(run_dir):
        loss = "-" if row["final_loss"] is None else f"{row['final_loss']:.4f}"
        secs = "-" if row["seconds"] is None else f"{row['seconds']:.1f}"
        lines.append(f"{row['stage']:<12}{row['steps']!s:>7}{loss:>12}{secs:>10}")
    if eval_results:
        lines.append("")
        lines.append(f"{'eval':<16}{'metric':<26}{'model':>9}{'BM25':>9}")
        for name, key, value, bm25 in metric_rows(eval_results):
            if key.startswith("lang/") and not per_language:
                continue
            ref = "-" if bm25 is None else f"{bm25:.4f}"
            lines.append(f"{name:<16}{key:<26}{value:>9.4f}{ref:>9}")
    return "\n".join(lines)


def write_report(cfg: RunConfig, run_dir: Path, summary: dict) -> Path:
    """Write metrics.json, plots/*.png and report.md; print the summary table."""
    run_dir = Path(run_dir)
    eval_results = summary.get("eval") or _load_json(run_dir / "eval" / "metrics.json")
    metrics = {"stages": stage_rows(run_dir), "eval": eval_results or {},
               "mine": summary.get("mine") or _load_json(run_dir / "mine" / "DONE"),
               "seconds": summary.get("seconds")}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float), encoding="utf-8")
    plots = make_plots(cfg, run_dir, eval_results or {})
    table = format_summary(run_dir, eval_results)
    full = format_summary(run_dir, eval_results, per_language=True)
    lines = [f"# Run report: {cfg.name}", "", f"Run directory: `{run_dir}`; total time "
             f"{summary.get('seconds', '-')} s.", "", "```", full, "```", ""]
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

    if cfg.weak.enabled and cfg.weak.mask.get("type") == "soft":
        import torch

        from conan_core.masks.base import MaskContext
        from conan_core.registries import REGISTRIES

        mask = REGISTRIES["masks"].build(cfg.weak.mask)
        total = max(cfg.weak.steps, 1)
        steps = [0, total // 4, total // 2, 3 * total // 4, total]
        fig, axes = plt.subplots(1, len(steps) + 1, figsize=(3 * (len(steps) + 1), 3))
        ts = list(range(total + 1))
        axes[0].plot(ts, [mask.alpha(t, total) for t in ts])
        axes[0].set_title("alpha(t)")
        axes[0].set_xlabel("weak step")
        for ax, step in zip(axes[1:], steps):
            alpha = mask.alpha(step, total)
            m = mask.matrix(MaskContext(lengths=torch.tensor([16]), seq_len=16, alpha=alpha))[0]
            ax.imshow(m.numpy(), vmin=0, vmax=1, cmap="viridis")
            ax.set_title(f"step {step}, alpha {alpha:.2f}")
            ax.set_xticks([])
            ax.set_yticks([])
        fig.tight_layout()
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

    per_lang = {k.split("/")[1]: v for k, v in (eval_results.get("cross_lingual") or {}).items()
                if k.startswith("lang/") and k.endswith("/recall@20")}
    if per_lang:
        fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(per_lang)), 3))
        langs = sorted(per_lang)
        ax.bar(langs, [per_lang[lang] for lang in langs])
        ax.set_ylabel("Recall@20")
        ax.set_title("cross-lingual retrieval per query language")
        fig.tight_layout()
        made.append(_save(fig, out_dir / "per_language_recall.png"))
    return made


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
