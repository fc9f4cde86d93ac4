"""Export: the same embeddings from Embedder, transformers AutoModel + pooling and
sentence-transformers (prompts, encode_query / encode_document, truncate_dim), with and without
trust_remote_code; poolers ST cannot express; masks that are neither causal nor bidirectional;
the card. Re-saving is in test_export_resave.py, the card's snippets in test_export_card.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from conan_core import Embedder
from conan_core.export import export_run

from tests import utils as tiny_run
SENTENCES = tiny_run.SENTENCES


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tiny_run.build_tiny_run(tmp_path_factory.mktemp("run"))
    (root / "eval").mkdir()
    (root / "eval" / "metrics.json").write_text(json.dumps(
        {"retrieval": {"ndcg@10": 0.5, "bm25/ndcg@10": 0.25, "n_queries": 3}, "sts": {"spearman": 0.4}}))
    return root


@pytest.fixture(scope="module")
def exported(run_dir) -> Path:
    return export_run(run_dir, run_dir / "export", verify=True)


def mean_pool(hidden: torch.Tensor, attention: torch.Tensor) -> np.ndarray:
    mask = attention.unsqueeze(-1).to(hidden.dtype)
    emb = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(emb, dim=-1).numpy()


def test_layout_config_and_card(exported):
    import conan_core.backbones.remote_code as remote_code

    names = {p.name for p in exported.iterdir()}
    assert {"config.json", "model.safetensors", "configuration_conan.py", "modeling_conan.py", "tokenizer.json",
            "embedder.json", "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
            "1_Pooling", "2_Normalize", "README.md"} <= names
    config = json.loads((exported / "config.json").read_text())
    assert config["model_type"] == "conan_embedder" and config["architectures"] == ["ConanEmbedderModel"]
    assert config["default_mask"] == "bidirectional" and config["default_alpha"] == 1.0
    assert config["auto_map"] == {"AutoConfig": "configuration_conan.ConanEmbedderConfig",
                                  "AutoModel": "modeling_conan.ConanEmbedderModel"}
    assert config["embedder"] == json.loads((exported / "embedder.json").read_text())
    # the code files are conan_core's own modules, copied by transformers' save mechanism
    package = Path(remote_code.__file__).parent
    for name in ("configuration_conan.py", "modeling_conan.py"):
        assert (exported / name).read_bytes() == (package / name).read_bytes(), name
    pooling = json.loads((exported / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] is True and pooling["include_prompt"] is True
    st = json.loads((exported / "config_sentence_transformers.json").read_text())
    assert st["prompts"] == {"query": "<instruct>Find passages that answer the question<query>", "document": ""}
    assert json.loads((exported / "sentence_bert_config.json").read_text())["max_seq_length"] == 64
    card = (exported / "README.md").read_text()
    for needle in ("## Architecture", "## Training", "| supervised |", "## Evaluation", "| retrieval | ndcg@10 | 0.5000 | 0.2500 |",
                   "MRL dims | 8, 16, 32", 'SentenceTransformer("PATH", trust_remote_code=True)',
                   'AutoModel.from_pretrained("PATH", trust_remote_code=True)', "import conan_core.export.remote_code",
                   "does **not** re-normalise", "writes the two code files again"):
        assert needle in card, needle


def test_embedder_and_automodel_agree(run_dir, exported):
    import conan_core.export.remote_code  # noqa: F401  (registers the export classes: no remote code needed)
    from transformers import AutoModel, AutoTokenizer

    source = Embedder.load(run_dir)
    again = Embedder.load(exported)
    np.testing.assert_allclose(again.encode_queries(SENTENCES), source.encode_queries(SENTENCES), atol=1e-6)

    model = AutoModel.from_pretrained(str(exported)).eval()
    assert type(model).__name__ == "ConanEmbedderModel"
    assert type(model.default_mask()).__name__ == "BidirectionalMask", \
        "the export ignores config.default_mask: a plain forward must use the exported mask"
    tok = AutoTokenizer.from_pretrained(str(exported))
    batch = tok(SENTENCES, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    np.testing.assert_allclose(mean_pool(hidden, batch["attention_mask"]), source.encode(SENTENCES), atol=1e-5)


def test_sentence_transformers_agrees(run_dir, exported):
    import conan_core.export.remote_code  # noqa: F401
    from sentence_transformers import SentenceTransformer

    source = Embedder.load(run_dir)
    st = SentenceTransformer(str(exported), device="cpu")
    assert st.max_seq_length == 64
    np.testing.assert_allclose(st.encode(SENTENCES), source.encode(SENTENCES), atol=1e-5)
    np.testing.assert_allclose(st.encode(SENTENCES, prompt_name="query"), source.encode_queries(SENTENCES), atol=1e-5)
    np.testing.assert_allclose(st.encode_query(SENTENCES), source.encode_queries(SENTENCES), atol=1e-5)
    np.testing.assert_allclose(st.encode_document(SENTENCES), source.encode_corpus(SENTENCES), atol=1e-5)
    # another instruction: the prompt carries both markers, as the card says
    other = "Retrieve the definition of the term"
    np.testing.assert_allclose(st.encode(SENTENCES, prompt=f"<instruct>{other}<query>"),
                               source.encode(SENTENCES, instruction=other), atol=1e-5)
    bare = st.encode(SENTENCES, prompt=other)  # no markers: not the trained input format
    assert np.abs(bare - source.encode(SENTENCES, instruction=other)).max() > 1e-3
    # truncate_dim alone cuts the unit vector and does not re-normalise (the card says so)
    cut = st.encode(SENTENCES, truncate_dim=8)
    np.testing.assert_allclose(cut, source.encode(SENTENCES)[:, :8], atol=1e-5)
    assert np.linalg.norm(cut, axis=1).max() < 1 - 1e-3
    small = st.encode(SENTENCES, truncate_dim=8, normalize_embeddings=True)
    np.testing.assert_allclose(small, source.encode(SENTENCES, dim=8), atol=1e-5)


TRUST_REMOTE_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer
    from sentence_transformers import SentenceTransformer

    path, out = sys.argv[1], sys.argv[2]
    assert "conan_core" not in sys.modules  # only the export's code files import it, through trust_remote_code
    texts = {texts!r}
    model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
    assert type(model).__name__ == "ConanEmbedderModel" and "conan_core" in sys.modules
    assert type(model).__module__.startswith("transformers_modules.")  # the directory's own file
    tok = AutoTokenizer.from_pretrained(path)
    batch = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    auto = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    st = SentenceTransformer(path, trust_remote_code=True, device="cpu").encode(texts, prompt_name="query")
    np.savez(out, auto=auto, st=st)
""")


@pytest.mark.slow
def test_trust_remote_code_without_importing_conan_core(run_dir, exported, tmp_path):
    out = tmp_path / "remote.npz"
    script = tmp_path / "remote.py"
    script.write_text(TRUST_REMOTE_SCRIPT.replace("{texts!r}", repr(SENTENCES)), encoding="utf-8")
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "hf_modules"), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, str(script), str(exported), str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(out)
    source = Embedder.load(run_dir)
    np.testing.assert_allclose(got["auto"], source.encode(SENTENCES), atol=1e-5)
    np.testing.assert_allclose(got["st"], source.encode_queries(SENTENCES), atol=1e-5)


@pytest.mark.parametrize("pooler,module_dir", [
    ({"type": "latent_attention", "num_latents": 4, "num_heads": 2, "exclude_instruction": True}, "1_ConanPooling"),
    ({"type": "weighted_mean", "exclude_instruction": True}, "1_ConanPooling"),
    ({"type": "last_token"}, "1_Pooling"),
    ({"type": "mean", "exclude_instruction": True}, "1_Pooling"),
    ({"type": "first_token", "exclude_instruction": True}, "1_Pooling"),
])
def test_other_poolers_export(tmp_path, pooler, module_dir):
    import conan_core.export.remote_code  # noqa: F401
    from sentence_transformers import SentenceTransformer

    root = tiny_run.build_tiny_run(tmp_path / "run", pooler=pooler)
    out = export_run(root, tmp_path / "export", verify=True)
    assert (out / module_dir).is_dir()
    if pooler["type"] == "latent_attention":
        assert (out / "pooler.safetensors").is_file() and (out / module_dir / "pooler.safetensors").is_file()
    source = Embedder.load(root)
    custom = module_dir == "1_ConanPooling"
    if custom:  # a class outside sentence_transformers.*: ST imports it only when trusted
        with pytest.raises(ValueError, match="trust_remote_code"):
            SentenceTransformer(str(out), device="cpu")
        assert "trust_remote_code=True" in (out / "README.md").read_text()
    st = SentenceTransformer(str(out), device="cpu", trust_remote_code=custom)
    np.testing.assert_allclose(st.encode(SENTENCES), source.encode(SENTENCES), atol=1e-5)
    np.testing.assert_allclose(st.encode(SENTENCES, prompt_name="query"), source.encode_queries(SENTENCES), atol=1e-5)
    if pooler["type"] == "latent_attention":
        # a copy sentence-transformers re-saves has neither embedder.json nor pooler.safetensors at its
        # top: Embedder takes the settings from config.json and the weights from 1_ConanPooling/
        st.save(str(tmp_path / "resaved"))
        assert not (tmp_path / "resaved" / "pooler.safetensors").exists()
        again = Embedder.load(tmp_path / "resaved")
        np.testing.assert_allclose(again.encode_queries(SENTENCES), source.encode_queries(SENTENCES), atol=1e-5)


def test_cli_export_and_errors(run_dir, tmp_path, capsys):
    from conan_core.cli import main

    out = tmp_path / "cli_export"
    assert main(["export", str(run_dir), "--out", str(out), "--max-length", "32"]) == 0
    printed = capsys.readouterr().out
    # the hints say what a fresh process needs: trust_remote_code (or the registering import)
    assert f"SentenceTransformer({str(out)!r}, trust_remote_code=True)" in printed
    assert f"AutoModel.from_pretrained({str(out)!r}, trust_remote_code=True)" in printed
    assert "import conan_core.export.remote_code" in printed
    assert json.loads((out / "sentence_bert_config.json").read_text())["max_seq_length"] == 32
    assert json.loads((out / "embedder.json").read_text())["max_length"] == 32
    assert main(["export", str(run_dir / "supervised" / "final"), "--out", str(run_dir / "supervised" / "final")]) == 1
    assert "which is being exported" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 1
    assert "no such directory" in capsys.readouterr().err


def test_export_mask():
    from conan_core.export.writer import export_mask
    from conan_core.registries import REGISTRIES

    soft = REGISTRIES["masks"].resolve({"type": "soft"})
    assert export_mask(soft, 1.0) == ("bidirectional", 1.0) and export_mask(soft, 0.0) == ("causal", 0.0)
    assert export_mask({"type": "bidirectional"}, 0.3) == ("bidirectional", 0.3)
    assert export_mask(soft, 0.5) == (soft, 0.5)  # mid-schedule: the spec and its alpha travel
    i_over_l = {**soft, "row_scaling": "i_over_l"}  # never bidirectional, even at alpha 1
    assert export_mask(i_over_l, 1.0) == (i_over_l, 1.0)


@pytest.mark.parametrize("mask,alpha", [({"type": "soft"}, 0.5), ({"type": "soft", "row_scaling": "i_over_l"}, 1.0)])
def test_a_mask_between_causal_and_bidirectional_exports(tmp_path, mask, alpha):
    """A stage that ended with a soft mask (mid-schedule, or the i_over_l variant) exports: a plain
    forward applies the mask at its alpha, and every path gives Embedder's vectors."""
    import conan_core.export.remote_code  # noqa: F401

    from conan_core.registries import REGISTRIES

    root = tiny_run.build_tiny_run(tmp_path / "run")
    settings_file = root / "supervised" / "final" / "embedder.json"
    settings = json.loads(settings_file.read_text())
    spec = REGISTRIES["masks"].resolve(mask)
    settings.update(mask=spec, alpha=alpha)
    settings_file.write_text(json.dumps(settings))
    out = export_run(root, tmp_path / "export", verify=True)
    config = json.loads((out / "config.json").read_text())
    assert config["default_mask"] == spec and config["default_alpha"] == alpha
    source = Embedder.load(root)
    tiny_run.assert_plain_loads_match(out, source, SENTENCES)
    # and the mask matters: the same weights under the bidirectional mask give other vectors
    twin = Embedder.load(tiny_run.build_tiny_run(tmp_path / "twin"))
    assert np.abs(twin.encode(SENTENCES) - source.encode(SENTENCES)).max() > 1e-3
