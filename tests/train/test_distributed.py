"""Two gloo ranks under torchrun (RELIABILITY rows 6, 8, 15, 18): uneven shards never hang, a NaN on
one rank stops every rank, SIGTERM on one rank commits a checkpoint on all and exits 0, a resume
is exact and a changed world size is refused. Every run has a 120 s timeout; a hang fails."""

from __future__ import annotations

import json

import pytest

from tests.train.harness import assert_ok, assert_preempted, assert_same_final, run_job, summaries

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
    assert_preempted(proc, nproc=2)
    assert_ok(run_job({**DIST, "out": str(resumed), "parallel": "fsdp"}, nproc=2))
    a, b = load_final(ddp), load_final(fsdp)
    assert a["parallel"] == "ddp" and b["parallel"] == "fsdp"
    for k in a["params"]:
        torch.testing.assert_close(a["params"][k], b["params"][k], rtol=1e-5, atol=1e-5)
    assert_same_final(fsdp, resumed)


def test_fsdp2_bf16_gathers_bf16_weights_and_keeps_fp32_masters(tmp_path):
    """parallel fsdp + precision bf16: blocks are all-gathered and computed in bf16 with fp32
    gradient reduction (MixedPrecisionPolicy), the sharded weights stay fp32, and training follows
    DDP under the same bf16 autocast to bf16 rounding; fsdp_mixed_precision: false gathers fp32."""
    import torch

    from tests.train.harness import load_final

    runs = {"ddp": {"parallel": "ddp"}, "mixed": {"parallel": "fsdp"},
            "fp32_gather": {"parallel": "fsdp", "fsdp_mixed_precision": False}}
    out = {}
    for name, extra in runs.items():
        out[name] = assert_ok(run_job({**DIST, "out": str(tmp_path / name), "precision": "bf16", **extra}, nproc=2))
    final = {name: load_final(tmp_path / name) for name in runs}
    seen = {name: {row["bf16_weights"] for row in _lines(tmp_path / name / "metrics.jsonl")} for name in runs}
    assert out["mixed"]["fsdp_param_dtype"] == "bfloat16" and seen["mixed"] == {1.0}
    assert out["fp32_gather"]["fsdp_param_dtype"] == "float32" and seen["fp32_gather"] == seen["ddp"] == {0.0}
    assert "fsdp_param_dtype" not in out["ddp"]
    for name in runs:
        params = final[name]["params"]
        assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in params.values()), name
    for k, v in final["ddp"]["params"].items():  # bf16 compute either way: bf16-level agreement
        torch.testing.assert_close(final["mixed"]["params"][k], v, rtol=0.0, atol=2e-2)
    assert abs(out["mixed"]["final_loss"] - out["ddp"]["final_loss"]) < 0.05 * abs(out["ddp"]["final_loss"])


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
