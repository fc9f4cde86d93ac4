"""Base class of backbones (registry kind ``backbones``)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from conan_core.registry import ComponentConfig


class Backbone(ABC):
    """Builds a decoder LLM whose attention takes a per-call mask component.

    ``build(vocab_size, *, meta=False)`` returns an ``nn.Module`` (a causal LM) with:

    * ``encode(input_ids [B, L], attention_mask [B, L] (1 real / 0 pad, right padding), *,
      mask=None, alpha=0.0, segment_ids=None) -> last_hidden_state [B, L, H]`` (after the final
      norm; ``mask`` a ``masks`` component, causal when None);
    * ``forward(input_ids, attention_mask=None, labels=None, *, mask=None, alpha=0.0, ...)`` ->
      an output with ``logits`` [B, L, V] and ``loss`` (shifted cross-entropy) when labels are given;
      with ``return_hidden=True`` the last hidden state [B, L, H] instead (what ``encode`` calls,
      so call a DDP / FSDP2-wrapped model this way rather than ``wrapped.module.encode``);
    * ``get_input_embeddings()`` / ``get_output_embeddings()`` (the LM head, ``.weight`` [V, H]);
    * ``save_pretrained(dir)``.

    ``meta=True`` builds on the meta device (no memory; parameter counting, planning).

    A backbone whose Config has a ``lora`` field (:class:`~conan_core.backbones.lora.LoraSpec`)
    returns from ``build`` a model with LoRA adapters injected and every other parameter frozen;
    :meth:`adapt` does the same to a model loaded elsewhere (a stage's ``final/``).
    """

    class Config(ComponentConfig):
        """No fields at this level."""

    def __init__(self, config: ComponentConfig, **runtime):
        self.config = config

    @abstractmethod
    def build(self, vocab_size: int, *, meta: bool = False):
        """Abstract: see the class docstring."""

    def adapt(self, model):
        """``model`` with the spec's LoRA adapters injected (``apply_lora``), or unchanged when the
        spec has none. Called by ``build`` and on models loaded from a stage's ``final/``."""
        from conan_core.backbones.lora import apply_lora, lora_spec_of

        spec = lora_spec_of(self.config)
        return model if spec is None else apply_lora(model, spec)
