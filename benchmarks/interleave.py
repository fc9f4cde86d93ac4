"""Interleaved rounds: how every benchmark in this directory turns timings into a ratio.

A *round* times each function once (or ``inner`` times: their mean, or their minimum for calls
of a few milliseconds), in ABBA order: even rounds run the functions in the given order, odd
rounds in reverse, so drift of the machine's speed and "who ran just before me" effects hit anchor
and candidate alike. Warm-up rounds (allocator, thread pool, lazy init, compile) are run and
thrown away.

A ratio is computed **per round** (``t_num[i] / t_den[i]``, both measured seconds apart) and
reported as the median over rounds with its spread: the interquartile range ``q25``-``q75`` and
``min``-``max``. A load spike from another process inflates one round's two timings together or
spoils one round's ratio, which the median then ignores; a ratio of whole-run medians would mix
rounds measured under different loads.

:func:`record` stores ``extra_info[key] = median`` (what ``check_ratios.py`` judges) and
``extra_info[key + "_spread"] = {q25, q75, min, max, rounds}`` (what ``readme_table.py`` prints).

Only the standard library: benchmark files load this module by path (any pytest import mode).
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence


#: the clocks :func:`interleave` can time with
CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}


def summarize(ratios: Sequence[float]) -> dict[str, float]:
    """Median, quartiles (``statistics.quantiles``, inclusive method), min, max and count of
    per-round ratios. Needs at least one value; with fewer than two the quartiles equal the value."""
    values = sorted(float(r) for r in ratios)
    if not values:
        raise ValueError("summarize: no ratios")
    if len(values) >= 2:
        q25, _, q75 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q25 = q75 = values[0]
    return {"median": statistics.median(values), "q25": q25, "q75": q75, "min": values[0],
            "max": values[-1], "rounds": len(values)}


@dataclass
class Rounds:
    """Seconds per call of each function, one entry per measured round (warm-up excluded)."""

    times: dict[str, list[float]] = field(default_factory=dict)

    def ratio(self, num: str, den: str, scale: float = 1.0) -> dict[str, float]:
        """:func:`summarize` of ``scale * times[num][i] / times[den][i]`` over rounds ``i`` (``scale``:
        e.g. 1/50 when ``num`` times 50 operations and the ratio is per operation)."""
        return summarize([scale * a / b for a, b in zip(self.times[num], self.times[den])])

    def medians(self) -> dict[str, float]:
        """Median seconds per call of each function (for the log, never for a ratio)."""
        return {name: statistics.median(ts) for name, ts in self.times.items()}


def interleave(fns: Mapping[str, Callable[[], Any]], *, rounds: int, warmup: int = 1,
               inner: int | Mapping[str, int] = 1, reduce: str = "mean", clock: str = "cpu") -> Rounds:
    """Time ``fns`` in ``rounds`` interleaved ABBA rounds after ``warmup`` unrecorded ones.

    ``inner`` calls per function and round (one number, or one per function name: a cheap noisy
    side can take the fastest of several calls next to an expensive steady one).
    ``reduce="mean"`` times them together and stores the time per call (for calls too short to
    time alone); ``"min"`` times each call and stores the fastest: another process can only ever
    add time, so for calls of a few milliseconds the minimum of a round is the least disturbed
    estimate.

    Python's cyclic garbage collector is off while timing and runs between rounds (as ``timeit``
    does): a collection triggered by one function's allocations would otherwise land in whichever
    function happens to run next.

    ``clock="cpu"`` (default) measures this process's CPU time (``time.process_time``): time the
    scheduler gives to other processes on a shared machine is not counted, which removes most of
    the round-to-round noise there. It is the right clock when the measured work runs on this
    process's CPUs, as every CPU benchmark here does (one thread). ``clock="wall"``
    (``time.perf_counter``) is for work that waits on something else: a GPU, a subprocess, I/O.
    """
    if reduce not in ("mean", "min"):
        raise ValueError(f"reduce must be 'mean' or 'min', got {reduce!r}")
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {clock!r}")
    now = CLOCKS[clock]
    names = list(fns)
    calls = {name: int(inner[name] if isinstance(inner, Mapping) else inner) for name in names}
    out = Rounds({name: [] for name in names})
    for _ in range(warmup):
        for name in names:
            for _ in range(calls[name]):
                fns[name]()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            gc.collect()
            for name in (names if r % 2 == 0 else names[::-1]):
                out.times[name].append(_time(fns[name], calls[name], reduce, now))
    finally:
        if gc_was_enabled:
            gc.enable()
    return out


def _time(fn: Callable[[], Any], inner: int, reduce: str, now: Callable[[], float]) -> float:
    """Seconds per call of ``fn`` over ``inner`` calls: their mean, or the fastest one."""
    if reduce == "min":
        best = float("inf")
        for _ in range(inner):
            t0 = now()
            fn()
            best = min(best, now() - t0)
        return best
    t0 = now()
    for _ in range(inner):
        fn()
    return (now() - t0) / inner


def record(info: dict, key: str, stats: Mapping[str, float]) -> float:
    """Store a ratio's median under ``key`` and its spread under ``key + "_spread"``; returns the median."""
    info[key] = stats["median"]
    info[key + "_spread"] = {k: stats[k] for k in ("q25", "q75", "min", "max", "rounds")}
    return stats["median"]


def describe(key: str, stats: Mapping[str, float]) -> str:
    """``key x1.02 [IQR 0.99-1.05, 15 rounds]`` for the benchmark's printout."""
    return (f"{key} x{stats['median']:.3g} [IQR {stats['q25']:.3g}-{stats['q75']:.3g}, "
            f"{stats['rounds']} rounds]")
