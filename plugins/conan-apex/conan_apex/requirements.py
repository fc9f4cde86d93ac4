"""Import NVIDIA apex on demand, with an error that says how to get it."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from conan_core.errors import ConanError

BUILD_COMMAND = (
    "git clone https://github.com/NVIDIA/apex && cd apex && "
    "pip install -v --disable-pip-version-check --no-cache-dir --no-build-isolation "
    '--config-settings "--build-option=--cpp_ext" --config-settings "--build-option=--cuda_ext" ./'
)
BUILD_COMMAND_NEW = "APEX_CPP_EXT=1 APEX_CUDA_EXT=1 pip install -v --no-build-isolation ./"


class ApexMissingError(ConanError, ImportError):
    """NVIDIA apex (or its compiled CUDA extensions) is not importable."""


def _instructions(key: str, fallback: str) -> str:
    return (f"NVIDIA apex is not on PyPI: the PyPI package named 'apex' is an unrelated project, never "
            f"`pip install apex` (if you did, `pip uninstall apex`). Build NVIDIA apex from source against "
            f"your installed torch and CUDA toolkit:\n    {BUILD_COMMAND}\n(recent apex checkouts also "
            f"accept `{BUILD_COMMAND_NEW}`), or use an NGC PyTorch container, which ships it. Without "
            f"apex, replace {key!r} with the core key {fallback!r}.")


def import_apex_attr(module: str, attr: str, *, extension: str, key: str, fallback: str) -> Any:
    """``getattr(import_module(module), attr)`` from NVIDIA apex, checking that the compiled
    ``extension`` module (e.g. ``fused_layer_norm_cuda``) exists, else :class:`ApexMissingError`."""
    if importlib.util.find_spec("apex") is None:
        raise ApexMissingError(f"{key}: NVIDIA apex is not installed. " + _instructions(key, fallback))
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ApexMissingError(
            f"{key}: an 'apex' package is installed but {module}.{attr} cannot be imported "
            f"({type(exc).__name__}: {exc}); it is probably the unrelated PyPI 'apex'. "
            + _instructions(key, fallback)) from exc
    if importlib.util.find_spec(extension) is None:
        raise ApexMissingError(
            f"{key}: NVIDIA apex is installed without its compiled extension {extension!r} (a Python-only "
            f"build). Rebuild it with the C++/CUDA extensions. " + _instructions(key, fallback))
    return obj
