"""Every registered key, plugins included, passes its kind's contract (conan_core.testing)."""

import pytest

from conan_core.registries import REGISTRIES
from conan_core.testing import check_component

CASES = [(kind, key) for kind, reg in sorted(REGISTRIES.items()) for key in reg.keys()
         if reg.entry(key).error is None]


@pytest.mark.parametrize("kind,key", CASES, ids=[f"{k}/{n}" for k, n in CASES])
def test_component_conforms(kind, key, tmp_path):
    if kind == "norms" and key.startswith("apex/"):
        pytest.importorskip("apex", reason="NVIDIA apex is not installed (the plugin's own tests cover the error)")
    if kind == "optimizers" and key.startswith("apex/"):
        pytest.importorskip("apex", reason="NVIDIA apex is not installed (the plugin's own tests cover the error)")
    check_component(kind, key, tmp_dir=tmp_path)
