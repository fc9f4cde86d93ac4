"""Models of an exported conan_core embedder (``conan export``); see ``configuration_conan``.

This file is also the export's ``modeling_conan.py`` (transformers copies it, with
``configuration_conan.py``, whenever a model of these classes is saved). Both classes return the
last hidden state of the text under the mask the embedder was trained with; pooling and
normalisation are the sentence-transformers modules' (or conan_core's ``Embedder``'s) job.

* :class:`ConanEmbedderModel`: the Conan decoder (:class:`~conan_core.model.ConanModel`, same
  weights and names) whose call without ``mask=`` applies ``config.default_mask`` at
  ``config.default_alpha``.
* :class:`HFEmbedderModel`: a transformers decoder (``LlamaModel``, ``Qwen2Model``, ...) under
  attribute ``decoder``, fed the mask as a 4-D additive bias
  (:func:`conan_core.backbones.hf.masked_forward`); a plain ``decoder(...)`` call would run it
  causally, which is not the function the embedder learned. Its first call runs the probe that
  the bias reaches this transformers version's attention (``check_mask_reaches_attention``).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from conan_core.model.modeling import ConanModel

from .configuration_conan import ConanEmbedderConfig, HFEmbedderConfig


def _alpha(config: Any, mask: Any, alpha: float | None) -> float:
    """A call's alpha: its own, else the config's ``default_alpha`` for the default mask (0 for a
    mask the call brings without an alpha)."""
    if alpha is not None:
        return float(alpha)
    return float(config.default_alpha) if mask is None else 0.0


class ConanEmbedderModel(ConanModel):
    """:class:`~conan_core.model.ConanModel` with the export's default mask and alpha."""

    config_class = ConanEmbedderConfig
    # saving a model of this class copies this file (and configuration_conan.py) into the directory
    _auto_class = "AutoModel"

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, *,
                mask: Any = None, alpha: float | None = None, **kwargs: Any):
        """:meth:`ConanModel.forward`; ``alpha`` None = ``config.default_alpha`` when ``mask`` is None."""
        return super().forward(input_ids, attention_mask, mask=mask, alpha=_alpha(self.config, mask, alpha), **kwargs)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
               mask: Any = None, alpha: float | None = None, segment_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``last_hidden_state`` [B, L, hidden_size] of :meth:`forward` with the same arguments."""
        return self(input_ids, attention_mask, mask=mask, alpha=alpha, segment_ids=segment_ids).last_hidden_state


class HFEmbedderModel(PreTrainedModel):
    """A transformers decoder (``decoder``) under the export's mask; see the module docstring."""

    config_class = HFEmbedderConfig
    _auto_class = "AutoModel"
    main_input_name = "input_ids"
    _supports_sdpa = True

    def __init__(self, config: HFEmbedderConfig):
        super().__init__(config)
        from transformers import AutoModel

        self.decoder = AutoModel.from_config(config.decoder_config(),
                                             attn_implementation=config.decoder_attn_implementation)
        self._default_mask = None
        self.post_init()

    @classmethod
    def from_decoder(cls, config: HFEmbedderConfig, decoder: torch.nn.Module) -> "HFEmbedderModel":
        """The model around an existing base decoder (its weights are used, not copied)."""
        with torch.device("meta"):  # the decoder built by __init__ is replaced at once: allocate nothing
            model = cls(config)
        model.decoder = decoder
        return model

    def _init_weights(self, module: torch.nn.Module) -> None:
        """The decoder's own initialisation (only reached for weights a checkpoint does not hold)."""
        init = getattr(self.decoder, "_init_weights", None)
        if init is not None:
            init(module)

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.decoder.get_input_embeddings()

    def set_input_embeddings(self, value: torch.nn.Module) -> None:
        self.decoder.set_input_embeddings(value)

    def default_mask(self) -> Any:
        """The mask a call without ``mask=`` uses: ``config.default_mask``, built on first use."""
        if self._default_mask is None:
            from conan_core.registries import REGISTRIES

            self._default_mask = REGISTRIES["masks"].build(self.config.default_mask, "config.default_mask")
        return self._default_mask

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, *,
                mask: Any = None, alpha: float | None = None, segment_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None,
                **unused: Any) -> BaseModelOutput | tuple:
        """Hidden states of a batch: ``input_ids`` [B, L] (or ``inputs_embeds`` [B, L, H]),
        ``attention_mask`` 0/1 [B, L] (padding anywhere), ``mask`` a ``masks`` component
        (``config.default_mask`` when None) at ``alpha`` (``config.default_alpha`` when both are None).

        Returns ``BaseModelOutput(last_hidden_state [B, L, hidden_size], hidden_states)``, or its
        tuple with ``return_dict=False``."""
        from conan_core.backbones.hf import ensure_mask_reaches_attention, masked_forward

        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("HFEmbedderModel.forward needs exactly one of input_ids [B, L] or inputs_embeds [B, L, H]")
        ensure_mask_reaches_attention(self.decoder.config.model_type, self.config.decoder_attn_implementation)
        if output_hidden_states is None:
            output_hidden_states = bool(self.config.output_hidden_states)
        if return_dict is None:
            return_dict = bool(self.config.return_dict)
        out = masked_forward(self.decoder, input_ids, attention_mask,
                             mask=self.default_mask() if mask is None else mask,
                             alpha=_alpha(self.config, mask, alpha), segment_ids=segment_ids,
                             position_ids=position_ids, inputs_embeds=inputs_embeds,
                             output_hidden_states=output_hidden_states)
        result = BaseModelOutput(last_hidden_state=out.last_hidden_state,
                                 hidden_states=out.hidden_states if output_hidden_states else None)
        return result if return_dict else result.to_tuple()

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
               mask: Any = None, alpha: float | None = None, segment_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``last_hidden_state`` [B, L, hidden_size] of :meth:`forward` (the ``Embedder`` call)."""
        return self(input_ids, attention_mask, mask=mask, alpha=alpha, segment_ids=segment_ids).last_hidden_state
