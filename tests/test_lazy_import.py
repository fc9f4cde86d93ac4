"""Importing conan_core is cheap: no faiss, no plugin module, no component, no torch.compile."""

import subprocess
import sys


def test_import_has_no_heavy_side_effects():
    code = (
        "import sys, conan_core, conan_core.registries, conan_core.config, conan_core.builder;"
        "from conan_core.registries import REGISTRIES; REGISTRIES['masks'].keys();"
        "bad = [m for m in ('faiss', 'conan_example', 'conan_apex', 'matplotlib', 'conan_core.masks.soft',"
        " 'sentence_transformers', 'bm25s') if m in sys.modules];"
        "print(','.join(bad))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == ""


def test_plain_import_does_not_scan_plugins():
    code = (
        "import conan_core, conan_core.registries as r;"
        "print(any(reg._scanned for reg in r.REGISTRIES.values()))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "False", res.stderr
