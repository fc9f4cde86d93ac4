"""``conan ablate``: ablation grids over seeds, as tables with a paired test against a baseline.

A grid is a YAML file of named override lists (``conan_core/presets/grids/*.yaml``, or a path;
``extends: GRID`` adds variants to another grid)::

    name: paper-table12
    baseline: linear
    variants:
      linear: ["supervised.tasks=[retrieval, classification]", ...]
      accelerating: ["weak.mask.schedule.type=accelerating", ...]

Overrides are ``--set`` values (plugin keys allowed). Per seed, the stages every variant shares
(data, tokenizer, pretrain, sft) are trained once, in ``OUT/seed<S>/base``; each variant re-runs
weak → mine → supervised → eval in ``OUT/seed<S>/v-<hash>``, where the hash is of its resolved
config's differences from the defaults (:func:`config_key`), so a variant that appears in several grids (or joins a grid later) is trained once and a
finished run is reused. A variant whose overrides change a shared stage is refused.

Each cell is the mean ± std over seeds; every other variant is compared with the baseline by a
paired t-test over seeds (difference of means and its two-sided p-value). Results are written to
``OUT/<grid>.md`` (table), ``OUT/<grid>.json`` (every number) and ``OUT/<grid>.png`` (bars with
the seed spread).
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from conan_core.config import load_config, resolve
from conan_core.errors import ConanError, ConfigError, ConfigIssue, PreemptedError, close_matches

GRID_PACKAGE = "conan_core.presets.grids"
#: (evaluator, metric, column title) shown in the tables
COLUMNS = [
    ("retrieval", "ndcg@10", "retrieval nDCG@10"),
    ("cross_lingual", "recall@20", "CLR R@20"),
    ("sts", "spearman", "STS Spearman"),
    ("classification", "accuracy", "class. acc"),
]
#: the same metrics on the held-out sources (eval data with eval/out_of_domain/)
OOD_COLUMNS = [(f"out_of_domain/{evaluator}", metric, title) for evaluator, metric, title in COLUMNS]
#: run-directory parts every variant of a seed shares (symlinked from the seed's base run)
SHARED = ("data", "tokenizer", "pretrain", "sft")
#: config sections a variant must leave as the base has them
SHARED_SECTIONS = ("seed", "data", "tokenizer", "model", "pretrain", "sft")


@dataclass
class Grid:
    """A named set of variants (``--set`` override lists) and the baseline they are tested against."""

    name: str
    variants: dict[str, list[str]]
    baseline: str
    description: str = ""
    source: str = ""


def grid_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(GRID_PACKAGE).iterdir() if p.name.endswith(".yaml"))


def load_grid(name_or_path: str, _chain: tuple[str, ...] = ()) -> Grid:
    """A shipped grid by name or a grid YAML file (``extends:`` merges the variants of another)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError([ConfigIssue("--grid", "grid file not found", str(path))])
        text, source = path.read_text(encoding="utf-8"), str(path)
    else:
        names = grid_names()
        if name_or_path not in names:
            raise ConfigError([ConfigIssue("--grid", "neither a grid YAML file nor a shipped grid", name_or_path,
                                           close_matches(name_or_path, names), names)])
        text = resources.files(GRID_PACKAGE).joinpath(f"{name_or_path}.yaml").read_text(encoding="utf-8")
        source = f"grid {name_or_path}"
    if source in _chain:
        raise ConfigError([ConfigIssue("extends", "grids extend each other in a cycle", " -> ".join(_chain))], source)
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue("", f"invalid YAML: {exc}")], source) from None
    variants: dict[str, list[str]] = {}
    baseline = raw.get("baseline")
    if "extends" in raw:
        parent = load_grid(str(raw["extends"]), (*_chain, source))
        variants.update(parent.variants)
        baseline = baseline or parent.baseline
    own = raw.get("variants") or {}
    issues = []
    if not isinstance(own, dict):
        issues.append(ConfigIssue("variants", "expected a mapping of name -> list of KEY=VALUE overrides", own))
        own = {}
    for name, overrides in own.items():
        if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
            issues.append(ConfigIssue(f"variants.{name}", "expected a list of KEY=VALUE strings", overrides))
            continue
        variants[str(name)] = list(overrides)
    if not variants:
        issues.append(ConfigIssue("variants", "the grid has no variant"))
    if baseline not in variants:
        issues.append(ConfigIssue("baseline", "must name one of the variants", baseline, [], sorted(variants)))
    if issues:
        raise ConfigError(issues, source)
    return Grid(name=str(raw.get("name") or path.stem), variants=variants, baseline=str(baseline),
                description=str(raw.get("description") or ""), source=source)


def variant_config(config: str, overrides: list[str] | None, seed: int, variant: list[str]):
    """The validated config of one variant at one seed (eval on, export off)."""
    return load_config(config, [*(overrides or []), f"seed={seed}", "export.enabled=false", *variant])


def config_key(cfg: Any) -> str:
    """A short hash of a resolved config (the name excluded): equal configs share a run directory.

    Only what differs from :class:`RunConfig`'s resolved defaults is hashed, so a field a later
    version adds with its default leaves every key, and every finished run, as it was. Two
    different resolved configs still get different keys (a value that differs is hashed on at
    least one side); a changed default is caught when the run is reused, by the run directory's
    config check, which names the field."""
    from conan_core.config import RunConfig

    data = without_defaults(resolve(cfg), resolve(RunConfig()))
    data.pop("name", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def without_defaults(data: dict, defaults: dict) -> dict:
    """``data`` without the entries equal to those of ``defaults`` (dicts compared key by key,
    recursively; any other value as a whole)."""
    out = {}
    for key, value in data.items():
        if key not in defaults:
            out[key] = value
        elif isinstance(value, dict) and isinstance(defaults[key], dict):
            rest = without_defaults(value, defaults[key])
            if rest:
                out[key] = rest
        elif value != defaults[key]:
            out[key] = value
    return out


def check_shared(base: Any, cfg: Any, variant: str) -> None:
    """Refuse a variant whose overrides change a stage every variant shares."""
    a, b = resolve(base), resolve(cfg)
    changed = [s for s in SHARED_SECTIONS if a.get(s) != b.get(s)]
    if changed:
        raise ConanError(f"ablation variant {variant!r} changes {', '.join(changed)}, which every variant of a seed "
                         "shares (trained once in seed<S>/base); put such a change in --set for the whole grid "
                         "or in a grid of its own")


@dataclass
class GridResult:
    """Per variant, the eval metrics of each seed (``runs[variant][i]`` is seed ``seeds[i]``)."""

    grid: Grid
    seeds: list[int]
    runs: dict[str, list[dict]] = field(default_factory=dict)
    dirs: dict[str, list[str]] = field(default_factory=dict)


def run_grid(config: str, grid: Grid, *, seeds: int = 3, first_seed: int = 0, out: str | Path | None = None,
             variants: list[str] | None = None, overrides: list[str] | None = None,
             progress: bool = True) -> GridResult:
    """Train (or reuse) every variant of ``grid`` for each seed; see the module docstring."""
    from conan_core.pipeline import run_pipeline

    names = variants or list(grid.variants)
    unknown = [v for v in names if v not in grid.variants]
    if unknown:
        raise ConanError(f"unknown variant(s) {unknown} of grid {grid.name}; valid: {', '.join(grid.variants)}")
    if grid.baseline not in names:
        names = [grid.baseline, *names]
    seed_list = list(range(first_seed, first_seed + seeds))
    first = load_config(config, overrides)
    root = Path(out or f"runs/ablate-{first.name}")
    # every variant and seed is validated before anything trains
    plans = {}
    for seed in seed_list:
        base = load_config(config, [*(overrides or []), f"seed={seed}", "eval.enabled=false", "export.enabled=false",
                                    "weak.enabled=false", "mine.enabled=false", "supervised.enabled=false"])
        cfgs = {}
        for name in names:
            cfg = variant_config(config, overrides, seed, grid.variants[name])
            check_shared(base, cfg, name)
            cfgs[name] = cfg
        plans[seed] = (base, cfgs)
    result = GridResult(grid=grid, seeds=seed_list)
    for seed in seed_list:
        base, cfgs = plans[seed]
        seed_dir = root / f"seed{seed}"
        base_dir = seed_dir / f"base-{config_key(base)}"
        if run_pipeline(base, base_dir, progress=progress, stages=["data", "pretrain", "sft"]).get("preempted"):
            raise PreemptedError(f"ablation stopped: {base_dir} was preempted; re-run the same command to resume")
        for name in names:
            cfg = cfgs[name]
            run_dir = seed_dir / f"v-{config_key(cfg)}"
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "variant.json").write_text(json.dumps(
                {"grid": grid.name, "variant": name, "overrides": grid.variants[name], "seed": seed}, indent=1),
                encoding="utf-8")
            for part in SHARED:
                link = run_dir / part
                if not link.exists():
                    link.symlink_to((base_dir / part).resolve(), target_is_directory=True)
            summary = run_pipeline(cfg, run_dir, progress=progress,
                                   stages=["weak", "mine", "supervised", "eval", "report"])
            if summary.get("preempted"):
                raise PreemptedError(f"ablation stopped: {run_dir} was preempted during {summary['preempted']}; "
                                     "re-run the same command to resume")
            result.runs.setdefault(name, []).append(summary.get("eval") or {})
            result.dirs.setdefault(name, []).append(str(run_dir))
    write_grid_outputs(result, root)
    return result


# ----------------------------------------------------------------------------- statistics

def paired_test(values: list[float], baseline: list[float]) -> dict[str, float | None]:
    """Paired t-test of ``values`` against ``baseline`` (same seeds, same order): mean difference,
    its standard deviation and the two-sided p-value (None with fewer than 2 pairs)."""
    diffs = [v - b for v, b in zip(values, baseline)]
    if len(diffs) < 2:
        return {"diff": diffs[0] if diffs else None, "diff_std": None, "p": None, "n": len(diffs)}
    mean = statistics.fmean(diffs)
    sd = statistics.stdev(diffs)
    if sd == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
    else:
        from scipy import stats

        t = mean / (sd / math.sqrt(len(diffs)))
        p = float(2 * stats.t.sf(abs(t), len(diffs) - 1))
    return {"diff": mean, "diff_std": sd, "p": p, "n": len(diffs)}


def _values(runs: list[dict], evaluator: str, metric: str) -> list[float | None]:
    return [r.get(evaluator, {}).get(metric) for r in runs]


def summarize(result: GridResult) -> dict:
    """Every cell: mean, std, per-seed values and, off the baseline, the paired test."""
    base_runs = result.runs.get(result.grid.baseline, [])
    out: dict[str, dict] = {}
    for name, runs in result.runs.items():
        row = {}
        for evaluator, metric, _ in COLUMNS + OOD_COLUMNS:
            vals = _values(runs, evaluator, metric)
            if any(v is None for v in vals) or not vals:
                continue
            cell = {"values": vals, "mean": statistics.fmean(vals),
                    "std": statistics.stdev(vals) if len(vals) > 1 else None}
            base_vals = _values(base_runs, evaluator, metric)
            if name != result.grid.baseline and base_vals and not any(v is None for v in base_vals):
                cell["vs_baseline"] = paired_test(vals, base_vals)
            row[f"{evaluator}/{metric}"] = cell
        out[name] = row
    return out


def format_grid_table(result: GridResult, columns: list[tuple[str, str, str]] | None = None) -> str:
    """Markdown: one row per variant; each cell mean ± std and, off the baseline, Δ and p.
    ``columns``: :data:`COLUMNS` (in-domain, the default) or :data:`OOD_COLUMNS`."""
    columns = COLUMNS if columns is None else columns
    summary = summarize(result)
    lines = ["| variant | " + " | ".join(title for _, _, title in columns) + " |",
             "|" + "---|" * (len(columns) + 1)]
    for name in result.runs:
        cells = []
        for evaluator, metric, _ in columns:
            cell = summary[name].get(f"{evaluator}/{metric}")
            if cell is None:
                cells.append("-")
                continue
            text = f"{cell['mean']:.4f}" + (f" ± {cell['std']:.4f}" if cell["std"] is not None else "")
            test = cell.get("vs_baseline")
            if test and test["p"] is not None:
                mark = "*" if test["p"] < 0.05 else ""
                text += f" (Δ {test['diff']:+.4f}, p {test['p']:.2f}{mark})"
            cells.append(text)
        label = f"{name} (baseline)" if name == result.grid.baseline else name
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_grid_tables(result: GridResult) -> str:
    """The in-domain table and, when the runs evaluated held-out sources, the out-of-domain one."""
    text = "In domain:\n\n" + format_grid_table(result)
    if any(k.startswith("out_of_domain/") for row in summarize(result).values() for k in row):
        text += "\n\nOut of domain (sources no training split holds):\n\n" + format_grid_table(result, OOD_COLUMNS)
    return text


def write_grid_outputs(result: GridResult, root: Path) -> dict[str, Path]:
    """``<grid>.md``, ``<grid>.json`` and ``<grid>.png`` (when matplotlib is installed) under ``root``."""
    from conan_core.fsio import atomic_write_json, atomic_write_text

    root.mkdir(parents=True, exist_ok=True)
    grid = result.grid
    head = (f"Grid `{grid.name}` ({grid.description}); seeds {result.seeds}; mean ± std over seeds; "
            f"Δ = paired difference to `{grid.baseline}`, p = two-sided paired t-test (* p < 0.05).\n\n")
    paths = {"md": atomic_write_text(root / f"{grid.name}.md", head + format_grid_tables(result) + "\n"),
             "json": atomic_write_json(root / f"{grid.name}.json", {
                 "grid": grid.name, "baseline": grid.baseline, "variants": grid.variants, "seeds": result.seeds,
                 "dirs": result.dirs, "cells": summarize(result)})}
    try:
        paths["png"] = plot_grid(result, root / f"{grid.name}.png")
    except ImportError:
        pass
    return paths


def plot_grid(result: GridResult, path: Path) -> Path:
    """Grouped bars: one group per metric (in-domain, then out-of-domain when evaluated), one bar
    per variant (mean), error bars = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(result)
    names = list(result.runs)
    columns = list(COLUMNS)
    if any(k.startswith("out_of_domain/") for row in summary.values() for k in row):
        columns += [(e, m, f"OOD {t}") for e, m, t in OOD_COLUMNS]
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * len(columns), 3.6))
    width = 0.8 / max(1, len(names))
    for k, name in enumerate(names):
        means, errs = [], []
        for evaluator, metric, _ in columns:
            cell = summary[name].get(f"{evaluator}/{metric}")
            means.append(cell["mean"] if cell else 0.0)
            errs.append((cell["std"] or 0.0) if cell else 0.0)
        xs = [i + (k - (len(names) - 1) / 2) * width for i in range(len(columns))]
        ax.bar(xs, means, width, yerr=errs, capsize=2, label=name)
    ax.set_xticks(range(len(columns)), [title for _, _, title in columns], fontsize=7, rotation=20, ha="right")
    ax.set_ylabel("score (mean ± std over seeds)")
    ax.set_title(f"{result.grid.name}: {len(result.seeds)} seed(s)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
