"""Regenerate the README's benchmark table from benchmark results.

    python benchmarks/readme_table.py .benchmarks/latest.json [MORE.json ...] [--readme README.md] [--check]

The table sits between the lines ``<!-- benchmarks:begin -->`` and ``<!-- benchmarks:end -->`` of
the README; everything outside them is left byte for byte. One row per guarded ratio of
``benchmarks/thresholds.json``, in its order: what is measured, the ratio key, the median of the
per-round ratios, its interquartile range and number of rounds, the committed value, the CI bound
and the target. A ratio whose benchmark is not in the results reads ``not run``. Several result
files are merged (a later one wins), so suites run separately (``make bench SUITE=...``) make one
table. ``--check`` rewrites nothing and exits 1 when the README's table differs from the
regenerated one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BEGIN = "<!-- benchmarks:begin -->"
END = "<!-- benchmarks:end -->"
HEADER = ("| benchmark | ratio | median | IQR (rounds) | committed | CI bound | target |",
          "|---|---|---|---|---|---|---|")


class TableError(ValueError):
    """The README has no (or a broken) marker pair."""


def _fmt(value) -> str:
    return f"{value:.3g}"


def render(rows: list[dict]) -> str:
    """The markdown table of ``check_ratios.check`` rows."""
    lines = list(HEADER)
    for r in rows:
        side = "max" if "max" in r["rule"] else "min"
        limit = float(r["rule"][side])
        if r["value"] is None:
            median, spread = r["status"], "-"
        else:
            median = _fmt(r["value"])
            s = r.get("spread")
            spread = f"{_fmt(s['q25'])}–{_fmt(s['q75'])} ({s['rounds']})" if s else "exact"
        lines.append(f"| {r['rule'].get('why', r['name'])} | `{r['key']}` | {median} | {spread} | "
                     f"{r['rule'].get('committed', '-')} | {'<=' if side == 'max' else '>='} {limit:g} | "
                     f"{r['rule'].get('target', '-')} |")
    return "\n".join(lines)


def parse(table: str) -> list[dict]:
    """The rows of a table written by :func:`render`: ``{benchmark, key, median, iqr, committed,
    bound, target}`` as the strings printed."""
    lines = [ln for ln in table.strip().splitlines() if ln.strip()]
    if tuple(lines[:2]) != HEADER:
        raise TableError("not a benchmark table: the header differs")
    out = []
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        bench, key, median, iqr, committed, bound, target = cells
        out.append({"benchmark": bench, "key": key.strip("`"), "median": median, "iqr": iqr,
                    "committed": committed, "bound": bound, "target": target})
    return out


def split_readme(text: str) -> tuple[str, str, str]:
    """(before and including the begin marker line, the table, from the end marker line on)."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise TableError(f"the README needs exactly one {BEGIN} line followed by one {END} line")
    head, rest = text.split(BEGIN, 1)
    table, tail = rest.split(END, 1)
    return head + BEGIN + "\n", table.strip("\n"), END + tail


def rewrite(text: str, table: str) -> str:
    """``text`` with the block between the markers replaced by ``table``."""
    head, _, tail = split_readme(text)
    return head + table + "\n" + tail


def _check_ratios():
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_ratios", HERE / "check_ratios.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="pytest-benchmark JSON file(s)")
    parser.add_argument("--readme", default=str(HERE.parent / "README.md"))
    parser.add_argument("--thresholds", default=str(HERE / "thresholds.json"))
    parser.add_argument("--check", action="store_true", help="exit 1 if the README table is not up to date")
    args = parser.parse_args(argv)
    checker = _check_ratios()
    rows, _ = checker.check(checker.load_results(args.results), json.loads(Path(args.thresholds).read_text()))
    readme = Path(args.readme)
    text = readme.read_text(encoding="utf-8")
    new = rewrite(text, render(rows))
    if args.check:
        if new != text:
            print(f"{readme}: the benchmark table is not the one these results give; run "
                  f"python benchmarks/readme_table.py {' '.join(args.results)}", file=sys.stderr)
            return 1
        return 0
    readme.write_text(new, encoding="utf-8")
    print(f"{readme}: benchmark table rewritten ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
