"""Two gloo ranks under torchrun (RELIABILITY rows 6, 8, 15, 18): uneven shards never hang, a NaN on
one rank stops every rank, SIGTERM on one rank commits a checkpoint on all and exits 0, a resume
is exact and a changed world size is refused. Every run has a 120 s timeout; a hang fails."""

from __future__ import annotations

import json

import pytest

from tests.train.harness import assert_ok, assert_same_final, run_job, summaries

pytestmark = pytest.mark.slow

DIST = {"steps": 6, "grad_accum": 2, "checkpoint_every": 2, "batch_size": 3, "shards": 3, "per_shard": 5}


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_uneven_shards_finish_with_equal_steps(tmp_path):
    proc = run_job({**DIST, "out": str(tmp_path)}, nproc=2)
    assert proc.returncode == 0, proc.stderr[-4000:]
    by_rank = {s["rank"]: s for s in summaries(proc)}
    assert set(by_rank) == {0, 1} and by_rank[0]["steps"] == by_rank[1]["steps"] == 6
    r0, r1 = _lines(tmp_path / "steps.jsonl"), _lines(tmp_path / "steps.rank-1.jsonl")
    assert [r["step"] for r in r0] == [r["step"] for r in r1] == list(range(1, 7))
    assert [r["loss"] for r in r0] == [r["loss"] for r in r1]  # the all-reduced mean loss
    # rank 0 holds shards 0 and 2 (10 samples), rank 1 shard 1 (5 samples): rank 1 loops 7 times
    keys1 = [k for r in r1 for _, k in r["consumed"]]
    assert len(keys1) == 36 and {k[:4] for k in keys1} == {"s001"}
    assert by_rank[1]["counters"]["epochs"] == 7
    keys0 = {k[:4] for r in r0 for _, k in r["consumed"]}
    assert keys0 == {"s000", "s002"}


def test_nan_on_one_rank_stops_every_rank(tmp_path):
    proc = run_job({**DIST, "out": str(tmp_path)}, fault="nan_loss@step=3:rank=1", nproc=2)
    assert proc.returncode != 0
    assert proc.stderr.count("non-finite loss at step 3") >= 2  # both ranks raise, none hangs
    assert (tmp_path / "checkpoints" / "step-000002" / "MANIFEST.json").is_file()
    assert not (tmp_path / "checkpoints" / "step-000003").exists()


def test_sigterm_on_one_rank_then_exact_resume(tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "run"
    assert_ok(run_job({**DIST, "out": str(ref)}, nproc=2))
    cfg = {**DIST, "out": str(out)}
    proc = run_job(cfg, fault="sigterm@step=3:rank=1", nproc=2)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert all(s["preempted"] and s["steps"] == 3 for s in summaries(proc))
    ckpt = out / "checkpoints" / "step-000003"
    assert (ckpt / "MANIFEST.json").is_file()
    assert (ckpt / "rank-00000.pt").is_file() and (ckpt / "rank-00001.pt").is_file()
    single = run_job(cfg)  # world_size 2 -> 1 is refused
    assert single.returncode != 0 and "world_size changed" in single.stderr
    assert_ok(run_job(cfg, nproc=2))
    assert_same_final(ref, out)
    for name in ("steps.jsonl", "steps.rank-1.jsonl"):
        assert (out / name).read_bytes() == (ref / name).read_bytes()


def test_fsdp2_matches_ddp_and_resumes_exactly(tmp_path):
    """FSDP2 (fully_shard) on 2 gloo ranks trains the same model as DDP (up to float reduction
    order), and a SIGTERM + resume under FSDP2 is bit-exact (sharded state gathered and re-sharded)."""
    import torch

    from tests.train.harness import load_final

    ddp, fsdp, resumed = tmp_path / "ddp", tmp_path / "fsdp", tmp_path / "resumed"
    assert_ok(run_job({**DIST, "out": str(ddp), "parallel": "ddp"}, nproc=2))
    assert_ok(run_job({**DIST, "out": str(fsdp), "parallel": "fsdp"}, nproc=2))
    proc = run_job({**DIST, "out": str(resumed), "parallel": "fsdp"}, fault="sigterm@step=3:rank=1", nproc=2)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert_ok(run_job({**DIST, "out": str(resumed), "parallel": "fsdp"}, nproc=2))
    a, b = load_final(ddp), load_final(fsdp)
    assert a["parallel"] == "ddp" and b["parallel"] == "fsdp"
    for k in a["params"]:
        torch.testing.assert_close(a["params"][k], b["params"][k], rtol=1e-5, atol=1e-5)
    assert_same_final(fsdp, resumed)


def test_gathered_in_batch_negatives_match_the_global_batch(tmp_path):
    """Weak-stage InfoNCE on 2 ranks (all_gather with gradients + DDP average) has the gradient of
    the single-process global batch (duplicate-positive masking included)."""
    import subprocess
    import sys

    import torch

    from tests.train.harness import HERE, REPO, TIMEOUT, job_env

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--rdzv_backend=c10d",
           "--rdzv_endpoint=localhost:0", "--max_restarts=0", str(HERE / "gather_job.py"), str(tmp_path)]
    try:
        proc = subprocess.run(cmd, env=job_env(), capture_output=True, text=True, timeout=TIMEOUT, cwd=str(REPO))
    except subprocess.TimeoutExpired:
        pytest.fail("gather job hung")
    assert proc.returncode == 0, proc.stderr[-4000:]
    grads = torch.load(tmp_path / "grads.pt")
    assert grads["ddp"].keys() == grads["single"].keys() and grads["ddp"]
    for name, g in grads["single"].items():
        torch.testing.assert_close(grads["ddp"][name], g, rtol=1e-4, atol=1e-6, msg=name)
