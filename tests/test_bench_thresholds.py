"""The benchmark machinery without timing anything: interleaved rounds and their per-round ratio
statistics, the CI guard (bounds, "not run", missing ratios, re-basing), the consistency of
thresholds.json, and the README table script (it round-trips)."""

from __future__ import annotations

import gc
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


check_ratios = load("check_ratios")
readme_table = load("readme_table")
interleave = load("interleave")
THRESHOLDS = json.loads((BENCH / "thresholds.json").read_text())


def result(name, suite="x", **info):
    return {"name": name, "fullname": f"benchmarks/test_{suite}.py::{name}", "extra_info": info}


def thresholds(**benchmarks):
    return {"tolerance": 0.15, "benchmarks": benchmarks}


TH = thresholds(
    a={"suite": "one", "ratios": {"r": {"committed": 1.0, "max": 1.15, "why": "a ratio"}}},
    b={"suite": "two", "ratios": {"s": {"committed": 10.0, "min": 8.5, "target": 12}}},
)


# ----------------------------------------------------------------------------- interleaved rounds

def test_summarize_median_quartiles_and_range():
    stats = interleave.summarize([5, 1, 4, 2, 3])
    assert stats == {"median": 3, "q25": 2, "q75": 4, "min": 1, "max": 5, "rounds": 5}
    assert interleave.summarize([2.0])["q25"] == 2.0
    with pytest.raises(ValueError):
        interleave.summarize([])


def test_interleave_runs_abba_rounds_after_warmup():
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    rounds = interleave.interleave(fns, rounds=4, warmup=1)
    assert calls == ["a", "b"] + ["a", "b", "b", "a"] * 2
    assert [len(v) for v in rounds.times.values()] == [4, 4]
    calls.clear()
    interleave.interleave(fns, rounds=2, warmup=0, inner=3, reduce="min", clock="wall")
    assert calls == ["a"] * 3 + ["b"] * 3 + ["b"] * 3 + ["a"] * 3
    calls.clear()
    interleave.interleave(fns, rounds=1, warmup=0, inner={"a": 2, "b": 1}, reduce="min")
    assert calls == ["a", "a", "b"]
    assert gc.isenabled()  # the collector is back on after timing
    with pytest.raises(ValueError, match="clock"):
        interleave.interleave(fns, rounds=1, clock="sundial")
    with pytest.raises(ValueError, match="reduce"):
        interleave.interleave(fns, rounds=1, reduce="max")


def test_ratios_are_per_round_and_recorded_with_their_spread():
    rounds = interleave.Rounds({"cand": [2.0, 4.0, 9.0], "anchor": [1.0, 2.0, 3.0]})
    stats = rounds.ratio("cand", "anchor")
    assert stats["median"] == 2.0 and stats["max"] == 3.0 and stats["rounds"] == 3  # not 4/2 of medians
    assert rounds.ratio("cand", "anchor", scale=0.5)["median"] == 1.0
    info = {}
    assert interleave.record(info, "x", stats) == 2.0
    assert info["x"] == 2.0 and set(info["x_spread"]) == {"q25", "q75", "min", "max", "rounds"}
    assert "IQR" in interleave.describe("x", stats)


# ----------------------------------------------------------------------------- the CI guard

def test_in_and_out_of_bounds():
    rows, problems = check_ratios.check({"benchmarks": [result("a", "one", r=1.1), result("b", "two", s=9)]}, TH)
    assert problems == [] and [r["status"] for r in rows] == ["ok", "ok"]
    rows, problems = check_ratios.check({"benchmarks": [result("a", "one", r=1.2), result("b", "two", s=8)]}, TH)
    assert [r["status"] for r in rows] == ["BAD", "BAD"]
    assert "must be <= 1.15" in problems[0] and "must be >= 8.5" in problems[1]


def test_a_suite_that_did_not_run_is_reported_not_failed():
    rows, problems = check_ratios.check({"benchmarks": [result("a", "one", r=1.0)]}, TH)
    assert problems == [] and [r["status"] for r in rows] == ["ok", "not run"]
    text = check_ratios.format_rows(rows)
    assert "1 not run" in text and "suites not run: two" in text


def test_a_benchmark_that_ran_without_its_ratio_fails():
    rows, problems = check_ratios.check({"benchmarks": [result("a", "one", other=1.0)]}, TH)
    assert rows[0]["status"] == "MISSING" and "stored no 'r'" in problems[0]


def test_results_files_merge_and_name_their_suite(tmp_path):
    first, second = tmp_path / "1.json", tmp_path / "2.json"
    first.write_text(json.dumps({"benchmarks": [result("a", "one", r=1.4)]}))
    second.write_text(json.dumps({"benchmarks": [result("a", "one", r=1.0), result("b", "two", s=9)]}))
    merged = check_ratios.load_results([first, second])
    assert merged["a"]["extra_info"]["r"] == 1.0 and merged["b"]["suite"] == "two"
    assert check_ratios.suite_of("benchmarks/test_model_step.py::test_x[full]") == "model_step"
    assert check_ratios.main([str(first), "--thresholds", str(_write(tmp_path / "th.json", TH))]) == 1
    assert check_ratios.main([str(second), "--thresholds", str(tmp_path / "th.json")]) == 0
    assert check_ratios.main([str(tmp_path / "none.json")]) == 2


def test_commit_moves_committed_value_and_bound(tmp_path):
    rows, _ = check_ratios.check({"benchmarks": [result("a", "one", r=2.0)]}, TH)
    out = check_ratios.commit(TH, rows)
    assert out["benchmarks"]["a"]["ratios"]["r"] == {"committed": 2.0, "max": 2.3, "why": "a ratio"}
    assert out["benchmarks"]["b"] == TH["benchmarks"]["b"]  # not run: untouched
    # from several runs: the median of each ratio over the runs that have it
    runs = [_write(tmp_path / f"run{i}.json", {"benchmarks": [result("a", "one", r=v)]})
            for i, v in enumerate([3.0, 1.0, 2.2])]
    th_file = _write(tmp_path / "th.json", TH)
    assert check_ratios.main([*map(str, runs), "--thresholds", str(th_file), "--commit"]) == 0
    committed = json.loads(th_file.read_text())["benchmarks"]["a"]["ratios"]["r"]
    assert committed["committed"] == 2.2 and committed["max"] == 2.53
    custom = json.loads(json.dumps(TH))
    custom["benchmarks"]["b"]["ratios"]["s"]["tolerance"] = 0.3
    rows, _ = check_ratios.check({"benchmarks": [result("b", "two", s=10.0)]}, custom)
    assert check_ratios.commit(custom, rows)["benchmarks"]["b"]["ratios"]["s"]["min"] == 7.0


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_thresholds_file_is_consistent():
    """Every guarded benchmark exists in its suite's file, and every bound sits within its
    tolerance of the committed value (a tolerance wider than the default must say why)."""
    default = THRESHOLDS["tolerance"]
    assert default == 0.15
    for name, entry in THRESHOLDS["benchmarks"].items():
        source = (BENCH / f"test_{entry['suite']}.py").read_text()
        assert re.search(rf"^def {re.escape(name.split('[')[0])}\(", source, flags=re.M), (name, entry["suite"])
        for key, rule in entry["ratios"].items():
            assert key in source, (name, key)  # the benchmark records this key
            side, limit = check_ratios.bound_of(rule)
            tol = rule.get("tolerance", default)
            assert tol <= default or len(rule.get("tolerance_why", "")) > 40, (name, key, "say why, with numbers")
            committed = rule["committed"]
            assert (limit >= committed) if side == "max" else (limit <= committed), (name, key)
            assert abs(limit / committed - 1) <= tol + 1e-3, (name, key, limit, committed, tol)
            assert rule.get("why") and "target" in rule, (name, key)


# ----------------------------------------------------------------------------- the README table

README = """# Project

Some text.

<!-- benchmarks:begin -->
old table
<!-- benchmarks:end -->

More text | with a pipe.
"""


def test_readme_table_round_trips(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    th = _write(tmp_path / "th.json", TH)
    spread = {"q25": 1.05, "q75": 1.125, "min": 1.0, "max": 1.3, "rounds": 16}
    res = _write(tmp_path / "res.json", {"benchmarks": [result("a", "one", r=1.0834, r_spread=spread)]})
    assert readme_table.main([str(res), "--readme", str(readme), "--thresholds", str(th)]) == 0
    text = readme.read_text()
    assert text.startswith("# Project\n\nSome text.\n\n<!-- benchmarks:begin -->\n")
    assert text.endswith("<!-- benchmarks:end -->\n\nMore text | with a pipe.\n")
    rows = readme_table.parse(readme_table.split_readme(text)[1])
    assert rows[0] == {"benchmark": "a ratio", "key": "r", "median": "1.08", "iqr": "1.05–1.12 (16)",
                       "committed": "1.0", "bound": "<= 1.15", "target": "-"}
    assert rows[1]["key"] == "s" and rows[1]["median"] == "not run" and rows[1]["bound"] == ">= 8.5"
    # regenerating from the same results changes nothing; --check agrees, and notices a stale table
    assert readme_table.main([str(res), "--readme", str(readme), "--thresholds", str(th)]) == 0
    assert readme.read_text() == text
    assert readme_table.main([str(res), "--readme", str(readme), "--thresholds", str(th), "--check"]) == 0
    newer = _write(tmp_path / "new.json", {"benchmarks": [result("a", "one", r=1.2, r_spread=spread)]})
    assert readme_table.main([str(newer), "--readme", str(readme), "--thresholds", str(th), "--check"]) == 1
    with pytest.raises(readme_table.TableError):
        readme_table.split_readme("no markers here")


def test_committed_readme_table_matches_the_thresholds():
    rows = readme_table.parse(readme_table.split_readme((ROOT / "README.md").read_text(encoding="utf-8"))[1])
    expected = [(key, rule) for _, entry in THRESHOLDS["benchmarks"].items() for key, rule in entry["ratios"].items()]
    assert [r["key"] for r in rows] == [k for k, _ in expected]
    for row, (_, rule) in zip(rows, expected):
        side, limit = check_ratios.bound_of(rule)
        assert row["committed"] == str(rule["committed"])
        assert row["bound"] == f"{'<=' if side == 'max' else '>='} {limit:g}"
