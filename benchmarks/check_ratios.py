"""Check the ratios a benchmark run saved against benchmarks/thresholds.json.

    python benchmarks/check_ratios.py .benchmarks/latest.json [--markdown]

Prints one row per guarded ratio (value, bound, target) and exits 1 when a ratio is outside its
bound or a guarded benchmark did not run. ``--markdown`` prints the table for the README.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def check(results: dict, thresholds: dict) -> tuple[list[dict], list[str]]:
    """Rows (name, key, value, bound, target, ok) and the list of problems."""
    by_name = {b["name"]: b.get("extra_info", {}) for b in results.get("benchmarks", [])}
    rows, problems = [], []
    for name, keys in thresholds.items():
        if name.startswith("_"):
            continue
        info = by_name.get(name)
        for key, rule in keys.items():
            value = None if info is None else info.get(key)
            if value is None:
                problems.append(f"{name}: {key} missing (did the benchmark run?)")
                rows.append({"name": name, "key": key, "value": None, "rule": rule, "ok": False})
                continue
            ok = ("min" not in rule or value >= rule["min"]) and ("max" not in rule or value <= rule["max"])
            if not ok:
                bound = f">= {rule['min']}" if "min" in rule else f"<= {rule['max']}"
                problems.append(f"{name}: {key} = {value:.4g}, must be {bound} ({rule.get('why', '')})")
            rows.append({"name": name, "key": key, "value": value, "rule": rule, "ok": ok})
    return rows, problems


def format_rows(rows: list[dict], markdown: bool = False) -> str:
    def bound(rule):
        return f">= {rule['min']}" if "min" in rule else f"<= {rule['max']}"

    if markdown:
        lines = ["| benchmark | ratio | value | CI bound | target |", "|---|---|---|---|---|"]
        for r in rows:
            value = "-" if r["value"] is None else f"{r['value']:.3g}"
            lines.append(f"| {r['rule'].get('why', r['name'])} | `{r['key']}` | {value} | {bound(r['rule'])} | "
                         f"{r['rule'].get('target', '-')} |")
        return "\n".join(lines)
    lines = []
    for r in rows:
        value = "missing" if r["value"] is None else f"{r['value']:.4g}"
        lines.append(f"{'ok ' if r['ok'] else 'BAD'} {r['name']:<48} {r['key']:<22} {value:>9}  "
                     f"(bound {bound(r['rule'])}, target {r['rule'].get('target', '-')})")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="pytest-benchmark JSON (--benchmark-json)")
    parser.add_argument("--thresholds", default=str(HERE / "thresholds.json"))
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    results = json.loads(Path(args.results).read_text())
    thresholds = json.loads(Path(args.thresholds).read_text())
    rows, problems = check(results, thresholds)
    print(format_rows(rows, markdown=args.markdown))
    for problem in problems:
        print(f"ratio out of bounds: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
