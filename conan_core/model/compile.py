"""Per-block ``torch.compile`` of the Conan decoder (the torchtitan recipe).

Each :class:`~conan_core.model.block.ConanBlock` is compiled on its own, in place
(``nn.Module.compile``: parameter names, state dicts and checkpoints are unchanged), while the
per-call preparation stays eager: :meth:`ConanModel.forward` reads the padding layout on the host,
builds the mask context and asks the attention backend for its plan (the soft-mask bias, or the
exact causal / bidirectional path, or the Flex block mask). A block then receives only tensors and
that plan, so the compiled graph has no host reads (no ``.item()``): alpha and the lengths reach it
inside the bias tensor (SDPA / eager) or as 0-d / 1-D tensors captured by the Flex ``score_mod``,
never as Python numbers. Nothing recompiles when alpha or the lengths change; a new sequence length
or a new kernel path (e.g. alpha leaving 0, which turns the exact causal path into the bias path)
compiles once more, after which the steady state runs without recompiling.

Usage (the trainer's ``compile: true`` calls this on its model)::

    from conan_core.model.compile import compile_blocks
    compile_blocks(model)                      # ConanForCausalLM or ConanModel, returns it
    compile_blocks(model, backend="aot_eager")  # any torch.compile keyword argument

The eager (uncompiled) model computes exactly what it did; a compiled block agrees with it to float32
rounding (tests/model/test_compile.py counts graph breaks and compares with a float64 reference).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from conan_core.errors import ConanError


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The ``layers`` of a :class:`ConanModel` or of the one inside a :class:`ConanForCausalLM`."""
    from conan_core.model.modeling import ConanModel

    base = model if isinstance(model, ConanModel) else getattr(model, "model", None)
    if not isinstance(base, ConanModel):
        raise ConanError(f"compile_blocks expects a ConanModel or ConanForCausalLM, got {type(model).__name__}; "
                         "for another transformers model use torch.compile on the model itself")
    return base.layers


def compile_blocks(model: nn.Module, **compile_kwargs: Any) -> nn.Module:
    """Compile every decoder block of ``model`` in place and return ``model``.

    ``compile_kwargs`` go to ``torch.compile`` (``backend``, ``mode``, ``dynamic``, ``fullgraph``...).
    Compilation itself happens lazily, on each block's first call. Calling this twice recompiles
    nothing: a block that is already compiled is left as it is."""
    for block in decoder_blocks(model):
        if getattr(block, "_compiled_call_impl", None) is None:
            block.compile(**compile_kwargs)
    return model


def blocks_compiled(model: nn.Module) -> bool:
    """True when every decoder block of ``model`` has been compiled by :func:`compile_blocks`."""
    return all(getattr(block, "_compiled_call_impl", None) is not None for block in decoder_blocks(model))
