"""Check the ratios a benchmark run saved against benchmarks/thresholds.json.

    python benchmarks/check_ratios.py .benchmarks/latest.json [MORE.json ...]
    python benchmarks/check_ratios.py RUN1.json RUN2.json RUN3.json --commit   # re-base committed values

thresholds.json holds, per guarded benchmark, its suite (``benchmarks/test_<suite>.py``) and per
ratio key: the ``committed`` median (measured with ``make bench`` on the reference machine), a
bound (``max`` or ``min``) within ``tolerance`` of it (0.15 unless the entry gives its own with a
``tolerance_why`` that quotes the measured spread), the ``target`` and a description (``why``).

Each guarded ratio gets one status:

* ``ok`` / ``BAD``: the benchmark ran and its median is inside / outside the bound;
* ``MISSING``: the benchmark ran but did not store the ratio (a failure: the guard cannot judge);
* ``not run``: the benchmark is not in the results (its suite was not selected, e.g.
  ``make bench SUITE=attention``, or it was skipped). Reported, never a failure.

Exit status 1 when any ratio is BAD or MISSING (checked on the merged results: a later file wins
for a benchmark in several). ``--commit`` rewrites thresholds.json instead: every guarded ratio
that ran gets ``committed`` = its median (with several result files, the median over the runs
that have it) and its bound moved to ``committed * (1 ± tolerance)``; ratios that did not run keep
their entries.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_TOLERANCE = 0.15


def load_results(paths) -> dict[str, dict]:
    """``{benchmark name: {"suite": ..., "extra_info": ...}}`` merged over pytest-benchmark JSON
    files (a later file wins for a benchmark present in several)."""
    out: dict[str, dict] = {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        for bench in data.get("benchmarks", []):
            out[bench["name"]] = {"suite": suite_of(bench.get("fullname", "")),
                                  "extra_info": bench.get("extra_info", {})}
    return out


def suite_of(fullname: str) -> str:
    """``benchmarks/test_attention.py::test_x[...]`` -> ``attention``."""
    file = fullname.split("::", 1)[0].rsplit("/", 1)[-1]
    stem = file[:-3] if file.endswith(".py") else file
    return stem[5:] if stem.startswith("test_") else stem


def bound_of(rule: dict) -> tuple[str, float]:
    """("max" or "min", value) of a ratio rule."""
    if "max" in rule:
        return "max", float(rule["max"])
    return "min", float(rule["min"])


def guarded(thresholds: dict):
    """(benchmark name, suite, ratio key, rule) for every guarded ratio, in file order."""
    for name, entry in thresholds.get("benchmarks", {}).items():
        for key, rule in entry["ratios"].items():
            yield name, entry["suite"], key, rule


def check(results: dict, thresholds: dict) -> tuple[list[dict], list[str]]:
    """Rows (name, suite, key, value, spread, rule, status) and the list of problems.

    ``results`` is :func:`load_results`'s mapping, or a raw pytest-benchmark JSON dict."""
    if "benchmarks" in results and isinstance(results["benchmarks"], list):
        results = {b["name"]: {"suite": suite_of(b.get("fullname", "")), "extra_info": b.get("extra_info", {})}
                   for b in results["benchmarks"]}
    rows, problems = [], []
    for name, suite, key, rule in guarded(thresholds):
        row = {"name": name, "suite": suite, "key": key, "value": None, "spread": None, "rule": rule}
        bench = results.get(name)
        if bench is None:
            row["status"] = "not run"
        elif not isinstance(bench["extra_info"].get(key), (int, float)):
            row["status"] = "MISSING"
            problems.append(f"{name}: ran but stored no {key!r} (the benchmark must record it)")
        else:
            value = float(bench["extra_info"][key])
            row["value"] = value
            row["spread"] = bench["extra_info"].get(key + "_spread")
            side, limit = bound_of(rule)
            ok = value <= limit if side == "max" else value >= limit
            row["status"] = "ok" if ok else "BAD"
            if not ok:
                problems.append(f"{name}: {key} = {value:.4g}, must be {'<=' if side == 'max' else '>='} {limit:g} "
                                f"(committed {rule.get('committed', '-')}; {rule.get('why', '')})")
        rows.append(row)
    return rows, problems


def format_rows(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        side, limit = bound_of(r["rule"])
        value = "-" if r["value"] is None else f"{r['value']:.4g}"
        spread = ""
        if r["spread"]:
            s = r["spread"]
            spread = f" [IQR {s['q25']:.3g}-{s['q75']:.3g}, {s['rounds']} rounds]"
        lines.append(f"{r['status']:<8} {r['name']:<46} {r['key']:<20} {value:>9}{spread:<30} "
                     f"(bound {'<=' if side == 'max' else '>='} {limit:g}, committed "
                     f"{r['rule'].get('committed', '-')}, target {r['rule'].get('target', '-')})")
    counts = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    not_run = sorted({r["suite"] for r in rows if r["status"] == "not run"})
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    tail = f" (suites not run: {', '.join(not_run)})" if not_run else ""
    lines.append(f"{len(rows)} guarded ratios: {summary}{tail}")
    return "\n".join(lines)


def median_over_runs(paths, thresholds: dict) -> list[dict]:
    """Rows as :func:`check` gives them, each ``value`` the median of that ratio over the result
    files that have it (None when none has)."""
    per_run = [check(load_results([path]), thresholds)[0] for path in paths]
    out = []
    for i, row in enumerate(per_run[0]):
        values = [rows[i]["value"] for rows in per_run if rows[i]["value"] is not None]
        out.append({**row, "value": statistics.median(values) if values else None, "runs": len(values)})
    return out


def commit(thresholds: dict, rows: list[dict]) -> dict:
    """A copy of ``thresholds`` with the measured medians of ``rows`` committed and bounds moved."""
    out = json.loads(json.dumps(thresholds))
    for r in rows:
        if r["value"] is None:
            continue
        rule = out["benchmarks"][r["name"]]["ratios"][r["key"]]
        tol = float(rule.get("tolerance", out.get("tolerance", DEFAULT_TOLERANCE)))
        committed = float(f"{r['value']:.4g}")
        side, _ = bound_of(rule)
        rule["committed"] = committed
        rule[side] = float(f"{committed * (1 + tol if side == 'max' else 1 - tol):.4g}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="pytest-benchmark JSON file(s) (--benchmark-json)")
    parser.add_argument("--thresholds", default=str(HERE / "thresholds.json"))
    parser.add_argument("--commit", action="store_true", help="write the measured medians into thresholds.json")
    args = parser.parse_args(argv)
    missing = [p for p in args.results if not Path(p).is_file()]
    if missing:
        print(f"check_ratios: no such results file: {', '.join(missing)} (run `make bench` first)", file=sys.stderr)
        return 2
    results = load_results(args.results)
    thresholds = json.loads(Path(args.thresholds).read_text())
    rows, problems = check(results, thresholds)
    print(format_rows(rows))
    for problem in problems:
        print(f"ratio out of bounds: {problem}", file=sys.stderr)
    if args.commit:
        medians = median_over_runs(args.results, thresholds)
        Path(args.thresholds).write_text(json.dumps(commit(thresholds, medians), indent=2, ensure_ascii=False) + "\n")
        print(f"committed {sum(r['value'] is not None for r in medians)} ratios (median over "
              f"{len(args.results)} run(s)) to {args.thresholds}")
        return 0
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
