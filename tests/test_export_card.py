"""The model card's code snippets (conan_core, sentence-transformers, transformers) are run as
written, with PATH replaced by the export, in a separate process; each must give Embedder's
embeddings: the query with the run's instruction, the document, a query with another instruction
and the Matryoshka prefix. Poolers sentence-transformers expresses (with and without instruction
exclusion), one it cannot (latent attention, with weights) and the hf backbone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conan_core import Embedder
from conan_core.export import export_run
from conan_core.export.card import DOCUMENT, OTHER_INSTRUCTION, QUERY
from tests import utils
from tests.backbones.harness import build_tiny_hf_run

pytestmark = pytest.mark.slow

VARIANTS = {
    "mean_excluding_instruction": ("conan", {"type": "mean", "exclude_instruction": True}),
    "latent_attention": ("conan", {"type": "latent_attention", "num_latents": 4, "num_heads": 2,
                                   "exclude_instruction": True}),
    "weighted_mean": ("conan", {"type": "weighted_mean"}),
    "first_token_excluding_instruction": ("conan", {"type": "first_token", "exclude_instruction": True}),
    "hf_last_token": ("hf", {"type": "last_token"}),
}
NAMES = ("q", "d", "other", "small")

RUNNER = textwrap.dedent("""
    import sys
    import numpy as np

    for card, path, out in zip(sys.argv[1::3], sys.argv[2::3], sys.argv[3::3]):
        blocks = open(card, encoding="utf-8").read().split("```python\\n")[1:]
        for index, block in enumerate(blocks):
            namespace = {}
            exec(compile(block.split("```")[0].replace("PATH", path), f"{card}[{index}]", "exec"), namespace)
            np.savez(f"{out}-{index}.npz", **{name: np.asarray(namespace[name], dtype=np.float32)
                                             for name in ("q", "d", "other", "small")})
""")


def test_card_snippets_give_the_embedder_vectors(tmp_path):
    jobs = []
    for name, (backbone, pooler) in VARIANTS.items():
        build = utils.build_tiny_run if backbone == "conan" else build_tiny_hf_run
        root = build(tmp_path / name / "run", pooler=pooler)
        out = export_run(root, tmp_path / name / "export", verify=True)
        card = (out / "README.md").read_text(encoding="utf-8")
        headers = re.findall(r"^### (.+)$", card, flags=re.M)
        assert headers == ["conan_core", "sentence-transformers", "transformers"], headers
        assert card.count("```python\n") == 3
        jobs.append((name, root, out))
    script = tmp_path / "run_card.py"
    script.write_text(RUNNER, encoding="utf-8")
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    args = [str(a) for name, root, out in jobs for a in (out / "README.md", out, tmp_path / name / "snippet")]
    proc = subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]

    for name, root, out in jobs:
        source = Embedder.load(root)
        mrl = source.mrl_dims[0]
        expected = {"q": source.encode_queries([QUERY]), "d": source.encode_corpus([DOCUMENT]),
                    "other": source.encode([QUERY], instruction=OTHER_INSTRUCTION),
                    "small": source.encode_corpus([DOCUMENT], dim=mrl)}
        for index, snippet in enumerate(("conan_core", "sentence-transformers", "transformers")):
            got = np.load(tmp_path / name / f"snippet-{index}.npz")
            for key in NAMES:
                np.testing.assert_allclose(got[key], expected[key], atol=1e-5, err_msg=f"{name}: {snippet} {key}")
