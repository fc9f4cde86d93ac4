"""The sample order depends only on the data and the seeds, not on PYTHONHASHSEED (RELIABILITY 7)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


SCRIPT = """
import itertools, json, sys
from conan_core.data.batching import task_batches
from conan_core.registries import REGISTRIES
build = REGISTRIES["sources"].build
path = sys.argv[1]
source = build({"type": "pair_shards", "path": path, "shuffle_buffer": 7}, seed=1)
out = [[s["__key__"] for s in b] for b in itertools.islice(task_batches(source, {"retrieval": 3, "*": 2}), 40)]
print(json.dumps(out))
"""


def test_order_is_identical_under_different_hash_seeds(sets, tmp_path):
    path = sets.pairs(tmp_path / "p", 40, 6)
    root = Path(__file__).resolve().parents[2]
    runs = []
    for hash_seed in ("0", "1"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
        done = subprocess.run([sys.executable, "-c", SCRIPT, str(path)], env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout))
    assert runs[0] == runs[1] and len(runs[0]) == 40
