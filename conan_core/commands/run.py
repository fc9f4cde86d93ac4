"""``conan run`` (the whole recipe) and ``conan ablate`` (the paper's ablation grid)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from conan_core.errors import ConanError


def add_commands(sub) -> None:
    p = sub.add_parser("run", help="run the whole recipe (re-running the same command resumes)",
                       description="data → tokenizer → pretrain → sft → weak → mine → supervised → eval "
                                   "→ export → report. Finished steps are skipped; an interrupted "
                                   "stage resumes from its last checkpoint.")
    p.add_argument("config", help="preset name (tiny, tiny-wide, small, conan-1.4b, ablation presets) or YAML path")
    p.add_argument("--out", help="run directory (default runs/<name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--stages", help="comma list of steps to run (data,pretrain,sft,weak,mine,supervised,eval,export,report)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate, build the model on the meta device, print parameters and the memory plan")
    p.add_argument("--gpus", type=int, default=8, help="GPUs for the --dry-run memory plan")
    p.add_argument("--fallback-checkpoint", action="store_true",
                   help="skip a corrupt newest checkpoint (with a WARNING) and resume from the previous one")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("compare", help="compare two runs: eval metrics, every stage's final weights, the export",
                       description="Exit 0 when eval/metrics.json values, the weights of every stage's final/ "
                                   "and of export/ (torch.equal per tensor), the mined pool and the teacher "
                                   "filter are identical; else list each difference and exit 1.")
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("ablate", help="run an ablation grid over seeds: mean ± std tables with a paired test",
                       description="Grids are YAML files of named override lists (shipped: paper-table4, "
                                   "paper-table6, paper-table12, leave-one-out; or a path). Shared stages are "
                                   "trained once per seed and finished variants are reused, so a variant can "
                                   "join an existing grid later.")
    p.add_argument("config", help="preset name or YAML path (what every variant starts from)")
    p.add_argument("--grid", default=None, help="shipped grid name or grid YAML (default paper-table4)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds")
    p.add_argument("--first-seed", type=int, default=0,
                   help="first seed (several processes can split a grid; a finished run is reused)")
    p.add_argument("--out", help="directory for all runs (default runs/ablate-<name>)")
    p.add_argument("--variants", help="comma list of variants (default: all; the baseline always runs)")
    p.add_argument("--list", action="store_true", help="list the shipped grids, or the variants of --grid")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field for every variant (repeatable)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_ablate)


def cmd_run(args: argparse.Namespace) -> int:
    from conan_core.config import load_config

    cfg = load_config(args.config, args.overrides)
    if args.dry_run:
        from conan_core.dry_run import dry_run_report

        print(dry_run_report(cfg, gpus=args.gpus))
        return 0
    from conan_core.commands.train import log_to_stderr
    from conan_core.errors import PREEMPTED_EXIT
    from conan_core.pipeline import check_steps, run_pipeline
    from conan_core.rundir import current_command

    log_to_stderr()  # resume points, the teacher filter's counts, checkpoint fallbacks
    out = Path(args.out or f"runs/{cfg.name}")
    stages = check_steps(args.stages.split(",")) if args.stages else None
    try:
        summary = run_pipeline(cfg, out, progress=not args.no_progress, stages=stages,
                               fallback_checkpoint=args.fallback_checkpoint)
    except KeyboardInterrupt:
        print(f"\ninterrupted: re-run `{current_command()}` to resume", file=sys.stderr)
        return 130
    if summary.get("preempted"):
        print(f"preempted: re-run `{current_command()}` to resume (exit code {PREEMPTED_EXIT})", file=sys.stderr)
        return PREEMPTED_EXIT
    made = [name for name in ("report.md", "metrics.json", "plots/", "export/") if (out / name.rstrip("/")).exists()]
    print(f"\nrun directory: {out}" + (f"  ({', '.join(made)})" if made else ""))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from conan_core.rundir import compare_runs

    for run in (args.run_a, args.run_b):
        if not Path(run).is_dir():
            raise ConanError(f"{run}: no such run directory")
    diffs = compare_runs(args.run_a, args.run_b)
    for line in diffs:
        print(line)
    print(f"{args.run_a} and {args.run_b}: " + ("identical" if not diffs else f"{len(diffs)} difference(s)"),
          file=sys.stderr)
    return 1 if diffs else 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from conan_core.ablate import format_grid_tables, grid_names, load_grid, run_grid

    if args.list:
        if args.grid is None:
            for name in grid_names():
                grid = load_grid(name)
                print(f"{name:<16} {grid.description} (baseline {grid.baseline}; {len(grid.variants)} variants)")
            return 0
        grid = load_grid(args.grid)
        for name, overrides in grid.variants.items():
            mark = " (baseline)" if name == grid.baseline else ""
            print(f"{name:<14}{mark} {' '.join(overrides) or '(the config as is)'}")
        return 0
    grid = load_grid(args.grid or "paper-table4")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None
    result = run_grid(args.config, grid, seeds=args.seeds, first_seed=args.first_seed, out=args.out,
                      variants=variants, overrides=args.overrides, progress=not args.no_progress)
    print(format_grid_tables(result))
    return 0
