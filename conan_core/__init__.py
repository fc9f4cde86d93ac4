"""conan_core: train text embedders the Conan-embedding-v2 way.

Importing this package is cheap: no torch.compile, no faiss, no plugin scan. Heavy parts load on
first use (``Embedder`` included).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Embedder", "__version__"]


def __getattr__(name: str):
    if name == "Embedder":
        from conan_core.embedder import Embedder

        return Embedder
    raise AttributeError(f"module 'conan_core' has no attribute {name!r}")
