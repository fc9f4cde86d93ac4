"""``<stage>.compile: true`` compiles every decoder block and trains to the eager model's numbers."""

from __future__ import annotations

import pytest
import torch

from conan_core.config import load_config
from conan_core.model.compile import blocks_compiled
from conan_core.train.checkpoint import load_tensors
from conan_core.train.stages import run_stage
from tests.train.harness import copy_run

pytestmark = pytest.mark.slow


def test_compiled_blocks_train_the_weak_stage_like_eager(trained_run, tmp_path, monkeypatch):
    _, run, _ = trained_run
    sets = ("weak.steps=4", "weak.checkpoint_every=4")
    eager = copy_run(run, tmp_path / "eager", ("pretrain", "sft"), sets)
    compiled = copy_run(run, tmp_path / "compiled", ("pretrain", "sft"),
                        (*sets, "weak.compile=true", "weak.compile_backend=aot_eager"))
    seen = []
    from conan_core.train.stages import common

    original = common.start_model

    def spy(ctx):
        model = original(ctx)
        seen.append(model)
        return model

    monkeypatch.setattr(common, "start_model", spy)
    run_stage(load_config(eager / "config.yaml"), "weak", eager, progress=False)
    run_stage(load_config(compiled / "config.yaml"), "weak", compiled, progress=False)
    assert not blocks_compiled(seen[0]) and blocks_compiled(seen[1])
    a = load_tensors(eager / "weak" / "final" / "model.safetensors")
    b = load_tensors(compiled / "weak" / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)
