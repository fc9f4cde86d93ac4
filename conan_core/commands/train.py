"""``conan pretrain | sft | weak | supervised CONFIG``: run (or resume) one training stage.

Each reads the previous stage's ``final/`` from the run directory and writes its own
``<stage>/final`` + ``DONE`` (docs/RUNDIR.md). Under ``torchrun --nproc_per_node N conan weak ...``
every rank runs the command (DDP, or FSDP2 for large models). SIGTERM commits a checkpoint and
exits 75 ("preempted, resumable"); the same command (``--resume`` is the default) continues
exactly where it stopped.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

STAGE_HELP = {
    "pretrain": "stage 1: LLM pretraining (causal LM on packed text, document mask)",
    "sft": "stage 2: LLM SFT (causal LM on instruction pairs, loss on the outputs)",
    "weak": "stage 3: weakly-supervised embedding training (InfoNCE, soft mask, teacher filter)",
    "supervised": "stage 4: supervised embedding training (hard negatives + DHNM, CoSENT, MRL)",
}


def add_commands(sub) -> None:
    for stage, text in STAGE_HELP.items():
        p = sub.add_parser(stage, help=text, description=text + ". Re-running resumes from the last "
                           "committed checkpoint; a finished stage (DONE) is skipped.")
        p.add_argument("config", help="preset name or YAML path")
        p.add_argument("--run-dir", help="run directory (default runs/<name>)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field (repeatable)")
        group = p.add_mutually_exclusive_group()
        group.add_argument("--resume", dest="resume", action="store_true", default=True,
                           help="continue from the newest committed checkpoint (default)")
        group.add_argument("--restart", dest="resume", action="store_false",
                           help="discard this stage's checkpoints and start it over")
        p.add_argument("--allow-data-change", action="store_true",
                       help="resume although the data, world size or worker count changed "
                            "(the data position restarts)")
        p.add_argument("--fallback-checkpoint", action="store_true",
                       help="skip a corrupt newest checkpoint (with a WARNING) and resume from the previous one")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.set_defaults(func=_runner(stage))


def _runner(stage: str):
    def run(args: argparse.Namespace) -> int:
        return cmd_stage(stage, args)

    return run


def cmd_stage(stage: str, args: argparse.Namespace) -> int:
    from conan_core.config import load_config
    from conan_core.errors import PREEMPTED_EXIT
    from conan_core.rundir import current_command
    from conan_core.train import distributed as D
    from conan_core.train.stages import run_stage

    log_to_stderr()
    cfg = load_config(args.config, args.overrides)
    run_dir = Path(args.run_dir or f"runs/{cfg.name}")
    try:
        summary = run_stage(cfg, stage, run_dir, resume=args.resume, progress=not args.no_progress,
                            allow_data_change=args.allow_data_change,
                            fallback_checkpoint=args.fallback_checkpoint)
    except KeyboardInterrupt:
        D.shutdown(D.init_distributed(cfg.device), wait=False)
        print(f"\ninterrupted: re-run `{current_command()}` to resume", file=sys.stderr)
        return 130
    except BaseException:
        D.shutdown(D.init_distributed(cfg.device), wait=False)
        raise
    D.shutdown(D.init_distributed(cfg.device))
    if summary.get("preempted"):
        print(f"{stage}: stopped at step {summary['steps']} (SIGTERM); checkpoint committed. Re-run "
              f"`{current_command()}` to resume (exit code {PREEMPTED_EXIT}).", file=sys.stderr)
        return PREEMPTED_EXIT
    print(f"{stage}: {summary['steps']} steps, final loss {summary['final_loss']:.4f}, "
          f"{summary['seconds']:.1f} s -> {run_dir / stage / 'final'}")
    return 0


def log_to_stderr() -> None:
    """INFO lines of the trainer on stderr (resume points, teacher filter, checkpoint fallbacks)."""
    logger = logging.getLogger("conan_core.train")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
