"""Export of an ``hf``-backbone run (a random Qwen2): the export wraps the transformers decoder in
``HFEmbedderModel``, whose plain forward applies the embedder's mask, so transformers,
sentence-transformers and Embedder give the run's embeddings; checked against a float64 plain
transformers reference and with left padding."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conan_core import Embedder
from conan_core.export import export_run
from tests import utils
from tests.backbones.harness import build_tiny_hf_run

SENTENCES = utils.SENTENCES


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return build_tiny_hf_run(tmp_path_factory.mktemp("hf_run"))


@pytest.fixture(scope="module")
def exported(run_dir) -> Path:
    return export_run(run_dir, run_dir / "export", verify=True)


def test_layout_and_config(exported):
    config = json.loads((exported / "config.json").read_text())
    assert config["model_type"] == "conan_hf_embedder" and config["architectures"] == ["HFEmbedderModel"]
    assert config["decoder"]["model_type"] == "qwen2" and config["hidden_size"] == 32
    assert config["default_mask"] == "bidirectional" and config["decoder_attn_implementation"] == "sdpa"
    assert config["auto_map"] == {"AutoConfig": "configuration_conan.HFEmbedderConfig",
                                  "AutoModel": "modeling_conan.HFEmbedderModel"}
    assert {"configuration_conan.py", "modeling_conan.py", "1_Pooling", "2_Normalize", "README.md"} <= \
        {p.name for p in exported.iterdir()}
    from safetensors import safe_open

    with safe_open(str(exported / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith("decoder.") for k in keys) and not any("lm_head" in k for k in keys)
    card = (exported / "README.md").read_text()
    assert "`qwen2` (a transformers decoder" in card and "| hidden size | 32 |" in card


def test_every_path_gives_the_run_embeddings(run_dir, exported):
    import conan_core.export.remote_code  # noqa: F401  (registers the export classes)

    source = Embedder.load(run_dir)
    again = Embedder.load(exported)
    assert type(again.model).__name__ == "HFEmbedderModel"
    for fn in ("encode_queries", "encode_corpus"):
        np.testing.assert_allclose(getattr(again, fn)(SENTENCES), getattr(source, fn)(SENTENCES), atol=1e-6)
    utils.assert_plain_loads_match(exported, source, SENTENCES)


def test_against_a_float64_plain_transformers_reference(exported):
    """Each text alone through the plain Qwen2Model in float64 with an all-open 4-D mask (the
    bidirectional attention the embedder uses): the export's batched forward, right- or
    left-padded, gives the same hidden states for every real token."""
    from transformers import AutoTokenizer

    from conan_core.export.remote_code import HFEmbedderModel

    model = HFEmbedderModel.from_pretrained(str(exported)).eval()
    reference = copy.deepcopy(model.decoder).double()
    reference.config._attn_implementation = "eager"
    tok = AutoTokenizer.from_pretrained(str(exported))
    texts = SENTENCES[:6]
    expected = []
    with torch.no_grad():
        for text in texts:
            ids = tok(text, truncation=True, max_length=64, return_tensors="pt")["input_ids"]
            open_mask = torch.zeros(1, 1, ids.shape[1], ids.shape[1], dtype=torch.float64)
            expected.append(reference(input_ids=ids, attention_mask=open_mask).last_hidden_state[0])
    for side in ("right", "left"):
        tok.padding_side = side
        batch = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        for row, want in enumerate(expected):
            got = hidden[row][batch["attention_mask"][row].bool()]
            assert got.shape == want.shape
            err = (got.double() - want).abs().max().item()
            assert err < 2e-5, (side, row, err)


def test_a_plain_decoder_call_would_be_causal(exported):
    """Why the wrapper exists: the decoder alone, as transformers runs it, is causal and gives other
    vectors than the trained (bidirectional) embedder."""
    from transformers import AutoTokenizer

    from conan_core.export.remote_code import HFEmbedderModel

    model = HFEmbedderModel.from_pretrained(str(exported)).eval()
    tok = AutoTokenizer.from_pretrained(str(exported))
    batch = tok(SENTENCES, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        wrapped = model(**batch).last_hidden_state
        plain = model.decoder(**batch).last_hidden_state
    real = batch["attention_mask"].bool()
    assert (wrapped - plain)[real].abs().max() > 1e-3
