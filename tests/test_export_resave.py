"""An export survives the ecosystem: loaded with ``trust_remote_code=True`` in a fresh process,
re-saved through sentence-transformers (``SentenceTransformer.save``) or transformers
(``save_pretrained``), and reloaded in another fresh process, it still carries its code files and
gives Embedder's embeddings (queries with the instruction, documents without, another
instruction through ``prompt=``), for both backbones; also on a second load in the same process
and when loaded through the classes ``conan_core.export.remote_code`` registers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conan_core import Embedder
from conan_core.export import export_run
from tests import utils
from tests.backbones.harness import build_tiny_hf_run

pytestmark = pytest.mark.slow

TEXTS = utils.SENTENCES
OTHER = "Retrieve the definition of the term"
BACKBONES = ("conan", "hf")
COPIES = ("st", "st_second", "st_registered", "hf")

# process 1: load with trust_remote_code before conan_core was ever imported and re-save (each
# export); load and re-save again in the same process; then through the registered classes
RESAVE = textwrap.dedent("""
    import sys
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    jobs = [(sys.argv[i], sys.argv[i + 1]) for i in range(1, len(sys.argv), 2)]
    assert "conan_core" not in sys.modules
    for path, out in jobs:
        st = SentenceTransformer(path, trust_remote_code=True, device="cpu")
        assert type(st[0].auto_model).__module__.startswith("transformers_modules."), type(st[0].auto_model)
        st.save(out + "/st")
        AutoModel.from_pretrained(path, trust_remote_code=True).save_pretrained(out + "/hf")
        AutoTokenizer.from_pretrained(path).save_pretrained(out + "/hf")
    for path, out in jobs:  # conan_core is imported by now (the code files import it)
        SentenceTransformer(path, trust_remote_code=True, device="cpu").save(out + "/st_second")
    import conan_core.export.remote_code
    for path, out in jobs:
        st = SentenceTransformer(path, device="cpu")
        assert type(st[0].auto_model).__module__ == "conan_core.backbones.remote_code.modeling_conan"
        st.save(out + "/st_registered")
""")

# process 2: reload every re-saved copy from its own code files and embed
RELOAD = textwrap.dedent("""
    import sys
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    texts, other = {texts!r}, {other!r}
    assert "conan_core" not in sys.modules
    for out in sys.argv[1:]:
        results = {{}}
        for name in ("st", "st_second", "st_registered"):
            st = SentenceTransformer(out + "/" + name, trust_remote_code=True, device="cpu")
            module = type(st[0].auto_model).__module__
            assert module.startswith("transformers_modules." + name + "."), module  # that copy's own file
            results[name + "/query"] = st.encode_query(texts)
            results[name + "/document"] = st.encode_document(texts)
            results[name + "/other"] = st.encode(texts, prompt="<instruct>" + other + "<query>")
        model = AutoModel.from_pretrained(out + "/hf", trust_remote_code=True).eval()
        tok = AutoTokenizer.from_pretrained(out + "/hf")
        batch = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        results["hf/document"] = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
        np.savez(out + "/reloaded.npz", **results)
""")


def run_script(code: str, args: list[str], tmp: Path, name: str) -> None:
    script = tmp / f"{name}.py"
    script.write_text(code, encoding="utf-8")
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp / f"modules-{name}"), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, str(script), *args], cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_resave_and_reload_in_fresh_processes(tmp_path):
    roots, exports, outs = {}, {}, {}
    for backbone in BACKBONES:
        build = utils.build_tiny_run if backbone == "conan" else build_tiny_hf_run
        roots[backbone] = build(tmp_path / backbone / "run")
        exports[backbone] = export_run(roots[backbone], tmp_path / backbone / "export")
        outs[backbone] = tmp_path / backbone / "resaved"
        outs[backbone].mkdir()
    run_script(RESAVE, [str(p) for b in BACKBONES for p in (exports[b], outs[b])], tmp_path, "resave")
    for backbone in BACKBONES:
        exported, out = exports[backbone], outs[backbone]
        for name in COPIES:  # the code travelled with every copy
            for file in ("configuration_conan.py", "modeling_conan.py"):
                assert (out / name / file).read_bytes() == (exported / file).read_bytes(), (backbone, name, file)
            assert json.loads((out / name / "config.json").read_text())["auto_map"] == \
                json.loads((exported / "config.json").read_text())["auto_map"]
    run_script(RELOAD.format(texts=TEXTS, other=OTHER), [str(outs[b]) for b in BACKBONES], tmp_path, "reload")

    for backbone in BACKBONES:
        got = np.load(outs[backbone] / "reloaded.npz")
        source = Embedder.load(roots[backbone])
        queries, documents = source.encode_queries(TEXTS), source.encode_corpus(TEXTS)
        other = source.encode(TEXTS, instruction=OTHER)
        for name in ("st", "st_second", "st_registered"):
            where = f"{backbone}/{name}"
            np.testing.assert_allclose(got[f"{name}/query"], queries, atol=1e-5, err_msg=where)
            np.testing.assert_allclose(got[f"{name}/document"], documents, atol=1e-5, err_msg=where)
            np.testing.assert_allclose(got[f"{name}/other"], other, atol=1e-5, err_msg=where)
        np.testing.assert_allclose(got["hf/document"], documents, atol=1e-5, err_msg=backbone)
        # a copy sentence-transformers re-saved has no embedder.json: Embedder reads the settings its
        # config.json keeps, so it still encodes queries with the trained instruction
        copy = outs[backbone] / "st"
        assert not (copy / "embedder.json").exists()
        again = Embedder.load(copy)
        assert again.settings.to_dict() == source.settings.to_dict()
        np.testing.assert_allclose(again.encode_queries(TEXTS), queries, atol=1e-5, err_msg=backbone)
