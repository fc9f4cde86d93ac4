"""Plots of miner statistics (matplotlib, imported only when plotting)."""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence


def plot_miner_stats(stats_history: Sequence[Mapping[str, Any]], out_png: str | os.PathLike) -> str:
    """Draw replacements per step and the negative-score distribution to ``out_png``.

    ``stats_history``: one ``miner.stats()`` dict per logged step (in order; each may carry a
    ``"step"`` entry, else its index is used). Left panel: ``replaced_step`` per step (and
    ``exhausted_step`` when non-zero). Right panel: the score histogram of the whole run
    (``score_hist_total`` of the last entry) and of the first and last logged step.
    Returns the path written.
    """
    if not stats_history:
        raise ValueError("plot_miner_stats: stats_history is empty")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h.get("step", i) for i, h in enumerate(stats_history)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(steps, [h.get("replaced_step", 0) for h in stats_history], label="replaced")
    exhausted = [h.get("exhausted_step", 0) for h in stats_history]
    if any(exhausted):
        left.plot(steps, exhausted, label="pool exhausted")
    left.set_xlabel("step")
    left.set_ylabel("negatives replaced")
    left.set_title("hard-negative replacements per step")
    left.legend()
    last = stats_history[-1]
    edges = last.get("score_hist_edges")
    if edges:
        centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
        width = edges[1] - edges[0]
        total = last.get("score_hist_total") or [0] * len(centers)
        norm = sum(total) or 1
        right.bar(centers, [c / norm for c in total], width=width, alpha=0.4, label="all steps")
        for name, entry in (("first step", stats_history[0]), ("last step", last)):
            counts = entry.get("score_hist_step") or [0] * len(centers)
            right.step(centers, [c / (sum(counts) or 1) for c in counts], where="mid", label=name)
        right.legend()
    right.set_xlabel("cosine(query, hard negative)")
    right.set_ylabel("fraction")
    right.set_title("hard-negative score distribution")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return os.fspath(out_png)
