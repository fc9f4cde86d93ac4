"""README's "Train on your own data": the three marked blocks, run exactly as written (the script
makes a JSONL file, a saved dataset, a parquet file, a CSV file and a held-out retrieval set; the
config names them, with no data.dir; `conan run` trains every stage on them, evaluates during the
supervised stage and keeps the best model)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train.harness import REPO, job_env

pytestmark = pytest.mark.slow

README = REPO / "README.md"


def blocks() -> dict[str, str]:
    """``{marker: code}`` of the blocks right after ``<!-- own-data: MARKER -->`` lines."""
    text = README.read_text(encoding="utf-8")
    found = dict(re.findall(r"<!-- own-data: (\S+) -->\n```\w*\n(.*?)```", text, flags=re.S))
    assert set(found) == {"make_data.py", "my_run.yaml", "run"}, sorted(found)
    return found


def test_readme_own_data_example_runs_as_written(tmp_path):
    pytest.importorskip("datasets")
    code = blocks()
    (tmp_path / "make_data.py").write_text(code["make_data.py"], encoding="utf-8")
    (tmp_path / "my_run.yaml").write_text(code["my_run.yaml"], encoding="utf-8")
    env = job_env()
    # `python` and `conan` of this interpreter's environment first on PATH; datasets' cache inside the test
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["HF_DATASETS_CACHE"] = str(tmp_path / "hf-cache")
    for line in code["run"].strip().splitlines():
        proc = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, f"{line}: rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"

    run = tmp_path / "runs" / "mine"
    config = (run / "config.yaml").read_text()
    assert "dir: null" in config and "demo: false" in config  # no data root at all
    assert not (run / "data").exists()
    for stage in ("pretrain", "sft", "weak", "supervised"):
        assert (run / stage / "DONE").is_file(), stage
    consumed = (run / "supervised" / "steps.jsonl").read_text()
    assert "triplets.parquet" in consumed and "sts.csv" in consumed and '"row-' in consumed
    assert "pairs" in (run / "weak" / "steps.jsonl").read_text()
    # evaluation during the supervised stage, the best model kept as its final/
    rows = [json.loads(x) for x in (run / "supervised" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "eval/retrieval/ndcg@10" in r] == [10, 20]
    best = json.loads((run / "supervised" / "best" / "best.json").read_text())
    assert best == json.loads((run / "supervised" / "final" / "best.json").read_text())
    assert (run / "export" / "config.json").is_file()
    assert "ndcg@10" in json.loads((run / "eval" / "metrics.json").read_text())["retrieval"]
    report = (run / "report.md").read_text()
    assert "## How this run was made" in report and "`conan run my_run.yaml --out runs/mine`" in report
    assert "preset `tiny`" in report and "| `data.demo` | true | false |" in report
