"""``conan mask show | plot``: print or draw an attention mask and its alpha schedule.

``add_commands(subparsers)`` adds the ``mask`` command to the ``conan`` CLI's subparsers; each leaf
parser sets ``func(args) -> int`` (the exit code).
"""

from __future__ import annotations

import argparse
from typing import Any

SCALINGS = ("l_over_i", "i_over_l")


def add_commands(subparsers: Any) -> None:
    """Add ``mask show`` and ``mask plot`` to an ``argparse`` subparsers object."""
    parser = subparsers.add_parser("mask", help="show or plot an attention mask and its alpha schedule",
                                   description="Show or plot an attention mask M (rows = queries, "
                                               "columns = keys) and the schedule alpha(t) driving it.")
    sub = parser.add_subparsers(dest="mask_command", metavar="{show,plot}")
    sub.required = True

    show = sub.add_parser("show", help="print the L x L mask matrix at one step",
                          description="Print M at one step, 4 decimals, rows = queries, plus alpha.")
    _common(show)
    show.add_argument("--step", type=int, default=0, help="0-based step of the stage (default 0)")
    show.add_argument("--alpha", type=float, default=None,
                      help="use this alpha instead of the schedule's value at --step")
    show.set_defaults(func=run_show)

    plot = sub.add_parser("plot", help="draw M at several steps and the alpha(t) curve to a PNG",
                          description="Draw M at several steps and the schedule alpha(t).")
    _common(plot)
    plot.add_argument("--steps", type=_int_list, default=None,
                      help="comma-separated steps to draw (default: 5 evenly spaced from 0 to --total)")
    plot.add_argument("--out", required=True, help="output image file (PNG)")
    plot.set_defaults(func=run_plot)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mask", default="soft", help="masks registry key (default soft)")
    p.add_argument("--schedule", default="linear", help="mask_schedules key for the soft mask (default linear)")
    p.add_argument("--total", type=int, default=100, help="total steps of the stage (default 100)")
    p.add_argument("--length", type=int, default=8, help="real sequence length l (default 8)")
    p.add_argument("--seq-len", type=int, default=None,
                   help="padded length L >= --length to show the padding rules (default = --length)")
    p.add_argument("--row-scaling", choices=SCALINGS, default="l_over_i",
                   help="soft mask off-causal value: min(alpha*l/i,1) or min(alpha*i/l,1)")
    p.add_argument("--segments", type=_int_list, default=None,
                   help="document mask: comma-separated document lengths summing to --length")


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def build_mask(args: argparse.Namespace):
    """The mask component the arguments describe (soft masks get --schedule / --row-scaling)."""
    from conan_core.registries import REGISTRIES

    spec: dict[str, Any] = {"type": args.mask}
    if args.mask == "soft":
        spec.update(schedule={"type": args.schedule}, row_scaling=args.row_scaling)
    return REGISTRIES["masks"].build(spec, path="mask")


def make_context(args: argparse.Namespace, alpha: float):
    """A one-sequence :class:`MaskContext` from --length / --seq-len / --segments."""
    import torch

    from conan_core.errors import ConanError
    from conan_core.masks.base import MaskContext

    if args.length < 1:
        raise ConanError(f"--length must be >= 1, got {args.length}")
    seq_len = args.seq_len if args.seq_len is not None else args.length
    if seq_len < args.length:
        raise ConanError(f"--seq-len ({seq_len}) must be >= --length ({args.length})")
    segment_ids = None
    if args.segments:
        if sum(args.segments) != args.length or min(args.segments) < 1:
            raise ConanError(f"--segments {args.segments} must be positive and sum to --length "
                             f"({args.length})")
        ids = [d for d, n in enumerate(args.segments) for _ in range(n)]
        ids += [len(args.segments)] * (seq_len - args.length)  # padding gets its own id
        segment_ids = torch.tensor([ids])
    return MaskContext(torch.tensor([args.length]), seq_len, alpha=alpha, segment_ids=segment_ids)


def format_matrix(m) -> str:
    """Rows of a 2-D tensor with 4 decimals, columns aligned."""
    return "\n".join(" ".join(f"{float(x):.4f}" for x in row) for row in m)


def run_show(args: argparse.Namespace) -> int:
    """Print alpha and the mask of one sequence at --step."""
    mask = build_mask(args)
    alpha = args.alpha if args.alpha is not None else mask.alpha(args.step, args.total)
    ctx = make_context(args, alpha)
    print(f"mask={args.mask} step={args.step}/{args.total} alpha={alpha:.4f} "
          f"length={args.length} seq_len={ctx.seq_len} (rows = queries i, columns = keys j)")
    print(format_matrix(mask.matrix(ctx)[0]))
    return 0


def run_plot(args: argparse.Namespace) -> int:
    """Draw the mask at several steps and alpha(t) over the stage into --out."""
    # the Agg canvas directly, not pyplot: headless, and no process-wide backend switch
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    mask = build_mask(args)
    total = args.total
    steps = args.steps if args.steps else sorted({round(total * f) for f in (0, 0.25, 0.5, 0.75, 1.0)})
    fig = Figure(figsize=(2.6 * (len(steps) + 1), 2.9))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(steps) + 1)
    for ax, step in zip(axes, steps):
        alpha = mask.alpha(step, total)
        m = mask.matrix(make_context(args, alpha))[0].numpy()
        ax.imshow(m, vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_title(f"t={step} alpha={alpha:.2f}", fontsize=9)
        ax.set_xlabel("key j")
        ax.set_ylabel("query i")
    ts = list(range(0, total + 1))
    curve = axes[-1]
    curve.plot(ts, [mask.alpha(t, total) for t in ts])
    curve.scatter(steps, [mask.alpha(s, total) for s in steps], color="red", zorder=3)
    curve.set_ylim(-0.05, 1.05)
    curve.set_xlabel("step t")
    curve.set_title(f"alpha(t): {args.schedule if args.mask == 'soft' else args.mask}", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")
    return 0
