"""``conan ablate``: the paper's ablation grid (RECIPE §3-5 tables) over seeds, as one table.

Every variant of one seed shares that seed's data, tokenizer, pretrain and sft stages (they are the
same for all variants), so the grid re-runs only weak → mine → supervised → eval per variant.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from conan_core.config import load_config

# variant -> --set overrides on top of the preset (the preset itself is "full").
VARIANTS: dict[str, list[str]] = {
    "full": [],
    "abrupt": ["weak.mask={type: bidirectional}"],            # causal -> bidirectional at once
    "accelerating": ["weak.mask.schedule.type=accelerating"],
    "decelerating": ["weak.mask.schedule.type=decelerating"],
    "no_dhnm": ["supervised.miner={type: static}"],
    "dhnm_v1": ["supervised.miner={type: dynamic_v1, interval: 10}"],
    "no_clr": ["supervised.tasks=[retrieval, classification]"],
    "cbb": ["supervised.loss={type: cbb}", "supervised.sts_weight=0.8"],  # v1: InfoNCE_cbb + 0.8 CoSENT
}

# (evaluator, metric, column title) shown in the table
COLUMNS = [
    ("retrieval", "ndcg@10", "retrieval nDCG@10"),
    ("cross_lingual", "recall@20", "CLR R@20"),
    ("sts", "spearman", "STS Spearman"),
    ("classification", "accuracy", "class. acc"),
]
SHARED = ("data", "tokenizer", "pretrain", "sft")


def run_ablation(config: str, *, seeds: int = 3, first_seed: int = 0, out: str | None = None,
                 variants: list[str] | None = None,
                 overrides: list[str] | None = None, progress: bool = True) -> str:
    from conan_core.errors import ConanError, PreemptedError
    from conan_core.pipeline import run_pipeline

    names = variants or list(VARIANTS)
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise ConanError(f"unknown ablation variant(s) {unknown}; valid: {', '.join(VARIANTS)}")
    base_cfg = load_config(config, overrides)
    root = Path(out or f"runs/ablate-{base_cfg.name}")
    results: dict[str, list[dict]] = {v: [] for v in names}
    for seed in range(first_seed, first_seed + seeds):
        seed_dir = root / f"seed{seed}"
        base = load_config(config, [*(overrides or []), f"seed={seed}", "eval.enabled=false",
                                    "export.enabled=false", "weak.enabled=false", "mine.enabled=false",
                                    "supervised.enabled=false"])
        if run_pipeline(base, seed_dir / "base", progress=progress, stages=["data", "pretrain", "sft"]).get("preempted"):
            raise PreemptedError(f"ablation stopped: {seed_dir / 'base'} was preempted; re-run to resume")
        for name in names:
            cfg = load_config(config, [*(overrides or []), f"seed={seed}", "export.enabled=false",
                                       *VARIANTS[name]])
            run_dir = seed_dir / name
            run_dir.mkdir(parents=True, exist_ok=True)
            for part in SHARED:
                link = run_dir / part
                if not link.exists():
                    link.symlink_to((seed_dir / "base" / part).resolve(), target_is_directory=True)
            summary = run_pipeline(cfg, run_dir, progress=progress,
                                   stages=["weak", "mine", "supervised", "eval", "report"])
            if summary.get("preempted"):
                raise PreemptedError(f"ablation stopped: {run_dir} was preempted during {summary['preempted']}; "
                                 "re-run the same command to resume")
            results[name].append(summary.get("eval") or {})
    table = format_table(results)
    (root / "ablation.md").write_text(table + "\n", encoding="utf-8")
    return table


def format_table(results: dict[str, list[dict]]) -> str:
    """Markdown table: one row per variant, mean ± std over seeds per column."""
    head = "| variant | " + " | ".join(title for _, _, title in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, runs in results.items():
        cells = []
        for evaluator, metric, _ in COLUMNS:
            values = [r[evaluator][metric] for r in runs if metric in r.get(evaluator, {})]
            if not values:
                cells.append("-")
            elif len(values) == 1:
                cells.append(f"{values[0]:.4f}")
            else:
                cells.append(f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
