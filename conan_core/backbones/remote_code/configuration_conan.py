"""Configurations of an exported conan_core embedder (``conan export``).

This file is also the export's ``configuration_conan.py``: transformers copies it next to the
weights whenever a model of these classes is saved (``save_pretrained``, a sentence-transformers
``save``), so an export stays loadable with ``trust_remote_code=True`` however often it is
re-saved. It imports the installed conan_core (the classes are conan_core's, not a copy) and
nothing relative except ``configuration_conan`` itself, as transformers' remote code requires.

* :class:`ConanEmbedderConfig` (``model_type="conan_embedder"``): a Conan decoder (every
  :class:`~conan_core.model.ConanConfig` field) plus the mask a plain forward uses.
* :class:`HFEmbedderConfig` (``model_type="conan_hf_embedder"``): any transformers decoder
  (``decoder``: its config as a dict, e.g. Qwen2's) plus the same mask fields.

Fields shared by both: ``default_mask`` (a ``masks`` registry key or spec, the mask of the stage
the embedder comes from; ``"bidirectional"`` after the supervised stage), ``default_alpha`` (the
schedule value that mask is applied at; only the soft mask reads it) and ``embedder`` (the
contents of ``embedder.json``: pooler, instruction, max length, MRL dims), kept in the config so
that a copy re-saved by another library (which writes no embedder.json) still loads in
``conan_core.Embedder`` with the settings it was trained with.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from conan_core.model.configuration import ConanConfig

#: decoder config keys that describe a saved file rather than the architecture
_FILE_KEYS = ("architectures", "auto_map", "transformers_version", "_name_or_path", "dtype", "torch_dtype",
              "_attn_implementation_autoset", "_commit_hash")
#: size fields copied from ``decoder`` to the top level, where tools look for them
MIRRORED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size",
            "max_position_embeddings", "intermediate_size")


class ConanEmbedderConfig(ConanConfig):
    """A :class:`~conan_core.model.ConanConfig` whose plain forward applies ``default_mask`` at
    ``default_alpha`` (see the module docstring)."""

    model_type = "conan_embedder"
    # saving a model of this class copies this file into the directory (transformers' remote code)
    _auto_class = "AutoConfig"

    def __init__(self, default_mask: str | dict[str, Any] = "bidirectional", default_alpha: float = 1.0,
                 embedder: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(default_mask=default_mask, **kwargs)
        self.default_alpha = float(default_alpha)
        self.embedder = dict(embedder) if embedder else None


class HFEmbedderConfig(PretrainedConfig):
    """A transformers decoder (``decoder``: its config dict, with ``model_type``) run under
    ``default_mask`` at ``default_alpha`` by ``HFEmbedderModel``.

    ``decoder_attn_implementation`` is ``"sdpa"`` or ``"eager"`` (the implementations that add a
    4-D float mask to the logits; flash kernels ignore it). The decoder's sizes are mirrored at the
    top level (``hidden_size``, ``vocab_size``, ...) for tools that read them there; they are
    derived from ``decoder`` and cannot be set on their own.
    """

    model_type = "conan_hf_embedder"
    _auto_class = "AutoConfig"

    def __init__(self, decoder: dict[str, Any] | None = None, default_mask: str | dict[str, Any] = "bidirectional",
                 default_alpha: float = 1.0, decoder_attn_implementation: str = "sdpa",
                 embedder: dict[str, Any] | None = None, **kwargs: Any):
        for key in MIRRORED:  # derived values written by an earlier save
            kwargs.pop(key, None)
        super().__init__(**kwargs)
        self.decoder = {k: v for k, v in dict(decoder or {}).items() if k not in _FILE_KEYS}
        if decoder_attn_implementation not in ("sdpa", "eager"):
            raise ValueError(f"decoder_attn_implementation must be 'sdpa' or 'eager' (flash kernels ignore the "
                             f"4-D mask), got {decoder_attn_implementation!r}")
        self.decoder_attn_implementation = decoder_attn_implementation
        self.default_mask = default_mask
        self.default_alpha = float(default_alpha)
        self.embedder = dict(embedder) if embedder else None
        for key in MIRRORED:
            setattr(self, key, self.decoder.get(key))

    def decoder_config(self) -> PretrainedConfig:
        """The decoder's transformers config (``AutoConfig.for_model``), caching off."""
        from transformers import AutoConfig

        if "model_type" not in self.decoder:
            raise ValueError("HFEmbedderConfig.decoder has no model_type; it must be a transformers decoder "
                             "config as a dict (config.to_dict())")
        fields = dict(self.decoder)
        config = AutoConfig.for_model(fields.pop("model_type"), **fields)
        config.use_cache = False
        return config
