"""The CI benchmark guard: ratios outside thresholds.json fail; every guarded benchmark exists."""

import json
import re
from pathlib import Path

import sys

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from check_ratios import check  # noqa: E402

THRESHOLDS = json.loads((ROOT / "benchmarks" / "thresholds.json").read_text())


def result(name, **info):
    return {"name": name, "extra_info": info}


def test_in_and_out_of_bounds():
    th = {"a": {"r": {"max": 1.5}}, "b": {"s": {"min": 5}}}
    rows, problems = check({"benchmarks": [result("a", r=1.2), result("b", s=7)]}, th)
    assert problems == [] and all(r["ok"] for r in rows)
    rows, problems = check({"benchmarks": [result("a", r=1.7), result("b", s=3)]}, th)
    assert len(problems) == 2 and "must be <= 1.5" in problems[0] and "must be >= 5" in problems[1]


def test_missing_benchmark_is_a_problem():
    _, problems = check({"benchmarks": []}, {"a": {"r": {"max": 1.5}}})
    assert problems and "missing" in problems[0]


def test_every_guarded_benchmark_exists():
    names = set()
    for path in (ROOT / "benchmarks").glob("test_*.py"):
        names.update(re.findall(r"^def (test_\w+)", path.read_text(), flags=re.M))
    for name in THRESHOLDS:
        if not name.startswith("_"):
            assert name.split("[")[0] in names, name
