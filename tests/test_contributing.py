"""The minimal plugin loss CONTRIBUTING.md shows satisfies its kind's contract as written."""

from __future__ import annotations

import re
from pathlib import Path

from conan_core.losses.base import ContrastiveLoss
from conan_core.registry import contract_problem
from conan_core.testing import CHECKS

DOC = Path(__file__).resolve().parents[1] / "CONTRIBUTING.md"


def test_contributing_contrastive_loss_example_passes_the_contrastive_contract():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    code = next(b for b in blocks if "class DotLoss" in b)
    code = "\n".join(line[3:] if line.startswith("   ") else line for line in code.splitlines())
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    cls = namespace["DotLoss"]
    assert contract_problem(ContrastiveLoss, cls, "contrastive_losses") is None
    CHECKS["contrastive_losses"](cls(cls.Config()), "acme/dot")
