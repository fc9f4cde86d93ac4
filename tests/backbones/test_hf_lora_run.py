"""`conan run` with an `hf` backbone (a random tiny Qwen2) and LoRA: every step runs, the export is
written and the report too; the export gives the run's embeddings through Embedder and
sentence-transformers; stage final/ directories hold merged weights, checkpoints the adapters.
`--dry-run` and `conan validate` judge the same config before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests import utils

pytestmark = pytest.mark.slow

SETS = ["data.demo_scale=0.1", "tokenizer.vocab_size=600", "pretrain.steps=20", "sft.steps=10", "weak.steps=20",
        "supervised.steps=20", "model.type=hf", "model.model_type=qwen2",
        "model.lora={r: 8, alpha: 16, dropout: 0.0, target_modules: [q_proj, v_proj]}"]


def conan(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, "-m", "conan_core.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def with_sets(*args: str, sets=SETS) -> list[str]:
    out = list(args)
    for item in sets:
        out += ["--set", item]
    return out


def test_conan_run_with_an_hf_backbone_and_lora_exports_and_reports(tmp_path):
    from safetensors import safe_open
    from sentence_transformers import SentenceTransformer

    from conan_core import Embedder

    bad = [s if not s.startswith("model.lora=") else "model.lora={target_modules: [q_prj]}" for s in SETS]
    res = conan(*with_sets("validate", "tiny", sets=bad))
    assert res.returncode == 2 and "did you mean 'q_proj'" in res.stdout + res.stderr
    dry = conan(*with_sets("run", "tiny", "--dry-run"))
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "parameters:" in dry.stdout and "backbone: hf" in dry.stdout

    out = tmp_path / "run"
    res = conan(*with_sets("run", "tiny", "--out", str(out), "--no-progress"))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for name in ("report.md", "metrics.json", "eval/metrics.json", "export/DONE", "export/config.json",
                 "export/modeling_conan.py", "export/README.md"):
        assert (out / name).is_file(), name
    assert "BM25" in res.stdout
    config = json.loads((out / "export" / "config.json").read_text())
    assert config["model_type"] == "conan_hf_embedder" and config["decoder"]["model_type"] == "qwen2"
    card = (out / "export" / "README.md").read_text()
    assert "| training | LoRA r=8, alpha=16.0 on q_proj, v_proj, merged" in card

    for stage in ("pretrain", "sft", "weak", "supervised"):
        with safe_open(str(out / stage / "final" / "model.safetensors"), "pt") as f:
            assert not any("lora_" in k or "base_layer" in k for k in f.keys()), stage
    last = sorted((out / "weak" / "checkpoints").iterdir())[-1]
    with safe_open(str(last / "model.safetensors"), "pt") as f:
        assert any(".lora_B.default." in k for k in f.keys())

    texts = utils.SENTENCES
    source = Embedder.load(out)
    exported = Embedder.load(out / "export")
    np.testing.assert_allclose(exported.encode_queries(texts), source.encode_queries(texts), atol=1e-6)
    st = SentenceTransformer(str(out / "export"), trust_remote_code=True, device="cpu")
    np.testing.assert_allclose(st.encode_query(texts), source.encode_queries(texts), atol=1e-5)
    np.testing.assert_allclose(st.encode_document(texts), source.encode_corpus(texts), atol=1e-5)
