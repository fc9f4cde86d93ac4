"""The transformers classes of an exported embedder, and their registration.

They live beside the backbones they wrap (the Conan decoder, a transformers decoder) so that
``Embedder.load`` can read an export without importing the export writer;
``conan_core.export.remote_code`` re-exports this package (the documented import).

``configuration_conan.py`` and ``modeling_conan.py`` are the files an export carries (transformers
copies them on every save of these classes): with them, ``AutoModel.from_pretrained(EXPORT,
trust_remote_code=True)`` and ``SentenceTransformer(EXPORT, trust_remote_code=True)`` load an
export in a process that never imported conan_core (the files import the installed conan_core).

Importing this package registers the two model types with transformers' ``AutoConfig`` /
``AutoModel`` (like ``import conan_core.model`` does for ``"conan"``), so that an export also
loads without ``trust_remote_code``; models loaded either way save the code files again.
"""

from __future__ import annotations

from conan_core.backbones.remote_code.configuration_conan import ConanEmbedderConfig, HFEmbedderConfig
from conan_core.backbones.remote_code.modeling_conan import ConanEmbedderModel, HFEmbedderModel

#: model_type -> (config class, model class) of every export class
EXPORT_MODEL_TYPES = {ConanEmbedderConfig.model_type: (ConanEmbedderConfig, ConanEmbedderModel),
                      HFEmbedderConfig.model_type: (HFEmbedderConfig, HFEmbedderModel)}


def register_auto() -> None:
    """Register the export model types with ``AutoConfig`` / ``AutoModel`` (idempotent)."""
    from transformers import AutoConfig, AutoModel

    for model_type, (config_class, model_class) in EXPORT_MODEL_TYPES.items():
        AutoConfig.register(model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)


register_auto()

__all__ = ["EXPORT_MODEL_TYPES", "ConanEmbedderConfig", "ConanEmbedderModel", "HFEmbedderConfig",
           "HFEmbedderModel", "register_auto"]
