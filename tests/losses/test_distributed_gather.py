"""all_gather_with_grad and cbb on 2 gloo ranks (torchrun) vs the single-process global batch.

A run that does not finish within 120 s is a failure (a hang), never a skip.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.losses import gather_worker
from tests.losses import loss_oracle as ref
from conan_core.losses.gather import all_gather_with_grad
from conan_core.registries import REGISTRIES

ROOT = Path(__file__).resolve().parents[2]


def run_torchrun(out: Path) -> tuple[int, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
           f"--nproc_per_node={gather_worker.WORLD}", gather_worker.__file__, str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group torchrun started, nothing else
        proc.communicate()
        pytest.fail("2-rank gloo run did not finish within 120 s (hang)")
    return proc.returncode, log.decode(errors="replace")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("gloo")
    code, log = run_torchrun(out)
    if code != 0 and ("address already in use" in log.lower()
                      or "terminate called without an active exception" in log):
        # torchrun picks a free port, then binds it: another process may take it in between; and
        # a gloo teardown race on a loaded machine can abort a rank at exit after its work is done
        code, log = run_torchrun(out)
    assert code == 0, log[-4000:]
    return [torch.load(out / f"rank{r}.pt") for r in range(gather_worker.WORLD)]


def test_all_gather_with_grad_matches_single_process(ranks):
    data = gather_worker.inputs()
    w = gather_worker.WORLD
    x = data["x"].reshape(w * 3, 5).clone().requires_grad_(True)
    total = sum((x * data["coef"][s]).sin().sum() for s in range(w))  # every rank's loss
    total.backward()
    for r in range(w):
        torch.testing.assert_close(ranks[r]["gathered"], data["x"].reshape(w * 3, 5))
        torch.testing.assert_close(ranks[r]["gather_grad"], x.grad[r * 3:(r + 1) * 3], rtol=1e-12, atol=1e-12)
        # the no-grad splice loses the other ranks' share of the gradient: a different answer
        assert not torch.allclose(ranks[r]["splice_grad"], x.grad[r * 3:(r + 1) * 3])


def test_cbb_gradients_equal_single_process_global_batch(ranks):
    data = gather_worker.inputs()
    w = gather_worker.WORLD
    enc = gather_worker.encoder()
    loss = REGISTRIES["contrastive_losses"].build("cbb")  # no process group here: a world of 1
    all_neg = torch.cat([data["neg"][r] for r in range(w)], 1)  # [B, W*n, 6], rank 0's negatives first
    all_ids = torch.cat([data["negative_ids"][r] for r in range(w)], 1)
    q, p, neg = enc(data["q"]), enc(data["p"]), enc(all_neg)
    info = loss(q, p, neg, positive_ids=data["positive_ids"], negative_ids=all_ids)
    # STS is each rank's own batch: DDP averages the per-rank CoSENT terms
    cos_terms = [REGISTRIES["pair_losses"].build("cosent")(enc(data["s1"][r]), enc(data["s2"][r]), data["scores"][r]).loss
                 for r in range(w)]
    global_loss = info.loss + 0.8 * sum(cos_terms) / w
    # the value is also the float64 formula
    formula = ref.info_nce(q, p, neg, positive_ids=data["positive_ids"], negative_ids=all_ids)
    torch.testing.assert_close(info.loss, formula, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(global_loss, list(enc.parameters()))
    for r in range(w):
        assert ranks[r]["cbb_masked"] > 0  # rank 1's copy of positive 1 reached every rank's mask
        for got, want in zip(ranks[r]["cbb_grads"], grads):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        n = data["neg"].shape[2]
        torch.testing.assert_close(ranks[r]["cbb_neg_scores"], info.neg_scores[:, r * n:(r + 1) * n])
    # each rank's objective is its InfoNCE_cbb (identical on all ranks) plus its own weighted CoSENT
    for r in range(w):
        torch.testing.assert_close(ranks[r]["cbb_loss"], (info.loss + 0.8 * cos_terms[r]).detach(),
                                   rtol=1e-12, atol=1e-12)


def test_mismatched_negatives_fail_on_every_rank_instead_of_hanging(ranks):
    for r in range(gather_worker.WORLD):
        assert "same (queries B, negatives per query n, dim H)" in ranks[r]["mismatch"]
        assert "(4, 3, 5)" in ranks[r]["mismatch"] and "(4, 2, 5)" in ranks[r]["mismatch"]


def test_single_process_is_identity():
    t = torch.randn(3, 2, requires_grad=True)
    assert all_gather_with_grad(t) is t
