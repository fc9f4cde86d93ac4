"""``import conan_core.export.remote_code``: registers the export model types with transformers'
Auto classes (the classes live in :mod:`conan_core.backbones.remote_code`)."""

from __future__ import annotations

from conan_core.backbones.remote_code import (EXPORT_MODEL_TYPES, ConanEmbedderConfig, ConanEmbedderModel,
                                              HFEmbedderConfig, HFEmbedderModel, register_auto)

__all__ = ["EXPORT_MODEL_TYPES", "ConanEmbedderConfig", "ConanEmbedderModel", "HFEmbedderConfig",
           "HFEmbedderModel", "register_auto"]
