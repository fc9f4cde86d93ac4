"""compile_blocks with Inductor (the default compiler backend): generated kernels match a float64
reference without graph breaks. Kept apart from test_compile.py: one Inductor compile of a block
takes most of this file's time on a CPU."""

import torch
import torch._dynamo
from tests.model.test_compile import batch, pair
from torch._dynamo.utils import counters

from conan_core.model.compile import compile_blocks
from tests.model.model_reference import build_mask


def test_inductor_compiled_blocks_match_float64():
    torch._dynamo.reset()
    counters.clear()
    model, reference = pair("sdpa", seed=3)
    compile_blocks(model)  # default backend: Inductor
    ids, attn = batch(9)
    soft = build_mask("soft")
    with torch.no_grad():
        hidden = model.encode(ids, attn, mask=soft, alpha=0.45)
        want = reference.encode(ids, attn, mask=soft, alpha=0.45)
    assert (hidden.double() - want)[attn.bool()].abs().max() < 1e-5
    assert not counters["graph_break"]
