"""``hf``: any transformers decoder (Llama, Qwen2, Mistral, ...) as the backbone.

Our mask reaches the library's attention as a 4-D additive float mask ``[B, 1, L, L]`` (``log M``
from the mask component, in the compute dtype), which transformers' "sdpa" and "eager" attention
add to the logits as they are. Flash-attention implementations ignore 4-D masks, so only those
two are allowed, and every build runs a probe (:func:`check_mask_reaches_attention`) that fails
loudly if a bidirectional mask gives causal outputs: several projects silently fell back to
causal attention after a library upgrade changed how custom masks are read.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from conan_core.backbones.base import Backbone
from conan_core.backbones.lora import LoraSpec
from conan_core.errors import ConanError
from conan_core.registry import ComponentConfig


class MaskIgnoredError(ConanError, RuntimeError):
    """A transformers model ignores the 4-D attention mask we pass (bidirectional = causal)."""


class HFBackbone(Backbone):
    """A transformers causal LM, from sizes (random init) or from a local pretrained ``path``,
    wrapped in :class:`HFDecoder` (``encode(..., mask=, alpha=)``)."""

    class Config(ComponentConfig):
        model_type: str = Field("llama", min_length=1,
                                description="transformers model_type (llama, qwen2, mistral, ...); "
                                            "ignored when path is set")
        path: str | None = Field(None, description="local directory of a pretrained causal LM; "
                                                   "when set, the size fields are ignored")
        hidden_size: int = Field(64, gt=0, description="model width")
        num_hidden_layers: int = Field(2, gt=0, description="decoder blocks")
        num_attention_heads: int = Field(4, gt=0, description="query heads")
        num_key_value_heads: int = Field(2, gt=0, description="key/value heads (GQA)")
        head_dim: int | None = Field(16, gt=0, description="per-head width (None: hidden / heads)")
        intermediate_size: int = Field(172, gt=0, description="MLP width")
        max_position_embeddings: int = Field(512, gt=0, description="longest sequence")
        rope_theta: float = Field(10000.0, gt=0, description="RoPE base")
        rms_norm_eps: float = Field(1e-6, gt=0, description="RMSNorm epsilon")
        tie_word_embeddings: bool = Field(False, description="share input embedding and LM head")
        initializer_range: float = Field(0.02, gt=0, description="std of the normal init")
        attn_implementation: Literal["sdpa", "eager"] = Field(
            "sdpa", description="transformers attention; flash kernels ignore 4-D masks and are refused")
        gradient_checkpointing: bool = Field(False, description="recompute blocks in backward")
        check_mask: bool = Field(True, description="probe at build that the 4-D mask reaches attention")
        lora: LoraSpec | None = Field(None, description="LoRA adapters (peft) on linear layers; only they "
                                                        "train, each stage's final/ holds the merged weights")

        @field_validator("model_type")
        @classmethod
        def _known_type(cls, value: str) -> str:
            # checked at validation, so `conan validate` refuses it before any run directory exists
            from transformers import CONFIG_MAPPING

            if value not in CONFIG_MAPPING:
                from conan_core.errors import close_matches

                hint = close_matches(value, list(CONFIG_MAPPING.keys()))
                raise ValueError(f"transformers has no model_type {value!r}"
                                 + (f"; did you mean {', '.join(map(repr, hint))}?" if hint else "")
                                 + " (a decoder such as llama, qwen2, mistral)")
            return value

        @model_validator(mode="after")
        def _shapes(self):
            if self.num_attention_heads % self.num_key_value_heads:
                raise ValueError(f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                                 f"num_key_value_heads ({self.num_key_value_heads})")
            if self.lora is not None and self.path is None:
                # checked here so `conan validate` names a wrong layer before any run starts; a
                # pretrained `path` (and a model type whose small probe cannot be built) is
                # checked when the model is built (stage start, --dry-run)
                from conan_core.backbones.lora import check_targets

                names = hf_linear_names(self.model_type)
                if names is not None:
                    check_targets(self.lora, names, f"a transformers {self.model_type!r} model")
            return self

    def hf_config(self, vocab_size: int):
        """The transformers config built from the size fields (``path`` unset)."""
        from transformers import AutoConfig

        c = self.config
        kwargs: dict[str, Any] = dict(
            vocab_size=vocab_size, hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers,
            num_attention_heads=c.num_attention_heads, num_key_value_heads=c.num_key_value_heads,
            intermediate_size=c.intermediate_size, max_position_embeddings=c.max_position_embeddings,
            rope_theta=c.rope_theta, rms_norm_eps=c.rms_norm_eps, tie_word_embeddings=c.tie_word_embeddings,
            initializer_range=c.initializer_range, use_cache=False)
        if c.head_dim is not None:
            kwargs["head_dim"] = c.head_dim
        if c.model_type in ("mistral", "qwen2"):
            kwargs["sliding_window"] = None  # full attention: the mask decides what is visible
        try:
            return AutoConfig.for_model(c.model_type, **kwargs)
        except (KeyError, ValueError) as exc:
            raise ConanError(f"backbone.model_type: transformers cannot build a config of type "
                             f"{c.model_type!r} ({exc}); use a decoder type such as llama, qwen2, mistral") from exc

    def build(self, vocab_size: int, *, meta: bool = False) -> "HFDecoder":
        """The wrapped causal LM (float32; on the meta device with ``meta=True``)."""
        from transformers import AutoModelForCausalLM

        impl = self.config.attn_implementation
        if self.config.path is not None:
            if meta:
                from transformers import AutoConfig

                config = AutoConfig.from_pretrained(self.config.path)
                with torch.device("meta"):
                    model = AutoModelForCausalLM.from_config(config, attn_implementation=impl)
            else:
                # float32 master weights whatever the checkpoint stores (keyword renamed in 5.0)
                dtype_kw = "dtype" if _transformers_major() >= 5 else "torch_dtype"
                model = AutoModelForCausalLM.from_pretrained(self.config.path, attn_implementation=impl,
                                                             **{dtype_kw: torch.float32})
            rows = model.get_input_embeddings().weight.shape[0]
            if vocab_size > rows:
                raise ConanError(f"backbone.path {self.config.path!r} has {rows} token embeddings but the "
                                 f"tokenizer has {vocab_size} tokens; use the model's own tokenizer")
        else:
            config = self.hf_config(vocab_size)
            if meta:
                with torch.device("meta"):
                    model = AutoModelForCausalLM.from_config(config, attn_implementation=impl)
            else:
                model = AutoModelForCausalLM.from_config(config, attn_implementation=impl)
        if self.config.check_mask:
            check_mask_reaches_attention(model.config.model_type, impl)
        if self.config.gradient_checkpointing:
            from conan_core.backbones.conan import enable_checkpointing

            enable_checkpointing(model)
        return self.adapt(HFDecoder(model))


@functools.lru_cache(maxsize=None)
def hf_linear_names(model_type: str) -> list[str] | None:
    """Leaf names of the linear layers of a transformers ``model_type`` causal LM (one small layer,
    built on the meta device), or None when this model type cannot be built from those sizes (the
    full model is checked when it is built)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from conan_core.backbones.lora import linear_names

    try:
        config = AutoConfig.for_model(model_type, vocab_size=32, hidden_size=32, num_hidden_layers=1,
                                      num_attention_heads=4, num_key_value_heads=2, intermediate_size=64)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception:  # any model class transformers cannot build this way: no early check, not an error
        return None
    return linear_names(model)


class HFDecoder(nn.Module):
    """A transformers ``*ForCausalLM`` (attribute ``hf``) behind the backbone contract of
    :class:`~conan_core.backbones.base.Backbone`: ``encode``, ``forward``, ``model(...)``,
    ``get_input_embeddings``, ``get_output_embeddings``, ``save_pretrained``."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.hf = hf_model
        # ``model(...)`` mirrors ConanForCausalLM.model; a plain callable (not a submodule) so
        # the base model's parameters are registered once, under ``hf``.
        self.model = _BaseModelCall(self)

    def lora_host(self) -> nn.Module:
        """The module LoRA adapters go into (:func:`conan_core.backbones.lora.adapter_host`)."""
        return self.hf

    @property
    def config(self):
        return self.hf.config

    def get_input_embeddings(self) -> nn.Module:
        return self.hf.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module:
        return self.hf.get_output_embeddings()

    def save_pretrained(self, save_directory: str, **kwargs: Any) -> None:
        """Saves the wrapped model (loadable by ``AutoModelForCausalLM.from_pretrained``)."""
        self.hf.save_pretrained(save_directory, **kwargs)

    def attention_bias(self, attention_mask: torch.Tensor | None, input_ids: torch.Tensor, *,
                       mask: Any = None, alpha: float = 0.0,
                       segment_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The 4-D additive mask ``[B, 1, L, L]`` fed to the library (see :func:`attention_bias`)."""
        ctx = mask_context_of(attention_mask, input_ids.shape[0], input_ids.shape[1], alpha, segment_ids,
                              input_ids.device)
        return attention_bias(self.hf, ctx, mask)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
               mask: Any = None, alpha: float = 0.0, segment_ids: torch.Tensor | None = None,
               position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Last hidden state [B, L, H] (after the final norm) of a batch under ``mask``, through
        ``self(..., return_hidden=True)`` so module hooks (DDP / FSDP2) run.

        Padding may sit anywhere (see :func:`masked_forward`); positions are ``0..L-1`` for right
        padding (restarting per segment when ``segment_ids`` is given)."""
        return self(input_ids, attention_mask, mask=mask, alpha=alpha, segment_ids=segment_ids,
                    position_ids=position_ids, return_hidden=True)

    def _hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, *, mask: Any,
                alpha: float, segment_ids: torch.Tensor | None, position_ids: torch.Tensor | None) -> torch.Tensor:
        return masked_forward(self.hf.base_model, input_ids, attention_mask, mask=mask, alpha=alpha,
                              segment_ids=segment_ids, position_ids=position_ids).last_hidden_state

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, *, mask: Any = None, alpha: float = 0.0,
                segment_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                return_hidden: bool = False):
        """``CausalLMOutput(logits [B, L, V], loss)``; loss as ``ConanForCausalLM.forward``;
        ``return_hidden=True``: only the last hidden state [B, L, H]."""
        from transformers.modeling_outputs import CausalLMOutput

        from conan_core.model.modeling import shifted_cross_entropy

        hidden = self._hidden(input_ids, attention_mask, mask=mask, alpha=alpha, segment_ids=segment_ids,
                              position_ids=position_ids)
        if return_hidden:
            return hidden
        logits = self.get_output_embeddings()(hidden)
        loss = None
        if labels is not None:
            loss = shifted_cross_entropy(logits, labels, attention_mask)
        return CausalLMOutput(loss=loss, logits=logits)


class _BaseModelCall:
    """``decoder.model(input_ids, attention_mask, *, mask, alpha, segment_ids, position_ids)`` ->
    ``BaseModelOutput(last_hidden_state=...)``, the call shape of ``ConanModel``."""

    def __init__(self, decoder: HFDecoder):
        self._decoder = decoder

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                 mask: Any = None, alpha: float = 0.0, segment_ids: torch.Tensor | None = None,
                 position_ids: torch.Tensor | None = None, **unused: Any):
        from transformers.modeling_outputs import BaseModelOutput

        hidden = self._decoder.encode(input_ids, attention_mask, mask=mask, alpha=alpha,
                                      segment_ids=segment_ids, position_ids=position_ids)
        return BaseModelOutput(last_hidden_state=hidden)


def mask_context_of(attention_mask: torch.Tensor | None, batch: int, length: int, alpha: float,
                    segment_ids: torch.Tensor | None, device: torch.device):
    """The :class:`~conan_core.masks.base.MaskContext` of a call without a KV cache: the padding
    layout read from the 0/1 ``attention_mask`` [B, L] (None = no padding; right padding is the fast
    path, any other layout carries the real-token mask), as :class:`~conan_core.model.ConanModel`
    reads it, so both backbones see the same mask for the same batch."""
    from conan_core.model.inputs import mask_context

    return mask_context(attention_mask, batch, length, 0, alpha, segment_ids, device)


def attention_bias(model: nn.Module, ctx: Any, mask: Any = None) -> torch.Tensor:
    """The 4-D additive mask ``[B, 1, L, L]`` of ``mask`` (causal when None) under ``ctx``: ``log M``
    in the compute dtype of ``model`` (the autocast dtype when autocast is on), closed entries at
    the dtype's finite minimum (the value transformers itself uses, safe in every kernel)."""
    from conan_core.registries import REGISTRIES

    if mask is None:
        mask = REGISTRIES["masks"].build({"type": "causal"})
    dtype = _compute_dtype(model, ctx.device)
    bias = mask.bias(ctx, dtype).to(ctx.device)
    return bias.clamp(min=torch.finfo(dtype).min)


def masked_forward(base_model: nn.Module, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, *,
                   mask: Any = None, alpha: float = 0.0, segment_ids: torch.Tensor | None = None,
                   position_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                   output_hidden_states: bool = False):
    """Run a transformers base model (``LlamaModel``, ``Qwen2Model``, ...) under a ``masks`` component.

    ``attention_mask`` is 0/1 [B, L] (1 = real token; None = no padding) and may have padding
    anywhere: with left padding or holes the mask rules read each token's rank among the real
    tokens and the positions are those ranks (``conan_core.model.inputs``), so every real token
    gets its hidden state of the unpadded sequence; right-padded batches take positions
    ``0..L-1`` (per document with ``segment_ids``). Returns the library's output
    (``last_hidden_state`` [B, L, H] after the final norm; ``hidden_states`` when asked).
    """
    from conan_core.model.inputs import position_ids_for

    ref = input_ids if input_ids is not None else inputs_embeds
    batch, length = ref.shape[:2]
    ctx = mask_context_of(attention_mask, batch, length, alpha, segment_ids, ref.device)
    bias = attention_bias(base_model, ctx, mask)
    if position_ids is None:
        position_ids = position_ids_for(ctx, segment_ids, ref.device)
    return base_model(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=bias,
                      position_ids=position_ids, use_cache=False, output_hidden_states=output_hidden_states,
                      return_dict=True)


#: (model_type, attn_implementation) pairs whose probe passed in this process
_PROBED: set[tuple[str, str]] = set()


def ensure_mask_reaches_attention(model_type: str, attn_implementation: str) -> None:
    """:func:`check_mask_reaches_attention`, run once per (model_type, attn_implementation) and process."""
    key = (model_type, attn_implementation)
    if key not in _PROBED:
        check_mask_reaches_attention(model_type, attn_implementation)
        _PROBED.add(key)


def check_mask_reaches_attention(model_type: str, attn_implementation: str) -> None:
    """Raise :class:`MaskIgnoredError` unless a 4-D float mask changes the attention of a tiny
    ``model_type`` model under ``attn_implementation``.

    Builds a one-layer random model (global RNG state saved and restored), runs 5 tokens with
    the causal bias and with an all-zero (bidirectional) bias, and requires: token 0 differs (it
    sees 1 token vs 5) and the last token matches (it sees all 5 tokens either way).
    """
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    length = 5
    try:
        config = AutoConfig.for_model(
            model_type, vocab_size=32, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64, use_cache=False)
        # on the CPU without autocast, whatever device context or autocast the caller runs under
        with torch.random.fork_rng(devices=[]), torch.device("cpu"), _no_autocast():
            torch.manual_seed(0)
            probe = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation).eval()
            ids = torch.randint(0, 32, (1, length))
        causal = torch.full((length, length), torch.finfo(torch.float32).min).triu(1)[None, None]
        bidirectional = torch.zeros(1, 1, length, length)
        with torch.no_grad(), torch.device("cpu"), _no_autocast():
            base = probe.base_model
            h_causal = base(input_ids=ids, attention_mask=causal, use_cache=False).last_hidden_state
            h_bidir = base(input_ids=ids, attention_mask=bidirectional, use_cache=False).last_hidden_state
    except Exception as exc:  # any failure of the probe means we cannot trust this model class
        raise MaskIgnoredError(
            f"transformers {transformers.__version__}: could not run the 4-D attention-mask probe for "
            f"model_type={model_type!r}, attn_implementation={attn_implementation!r}: "
            f"{type(exc).__name__}: {exc}. Use the 'conan' backbone or a supported decoder "
            f"(llama, qwen2, mistral).") from exc
    verify_mask_effect(h_causal, h_bidir, model_type, attn_implementation)


def verify_mask_effect(h_causal: torch.Tensor, h_bidirectional: torch.Tensor, model_type: str,
                       attn_implementation: str) -> None:
    """The probe's verdict on hidden states [1, L, H] of the same tokens under a causal and a
    bidirectional 4-D mask: token 0 must differ (it sees 1 token vs L) and the last token must
    match (it sees all L tokens either way); else :class:`MaskIgnoredError`."""
    import transformers

    first_same = torch.allclose(h_causal[0, 0], h_bidirectional[0, 0], atol=1e-6, rtol=0)
    last_same = torch.allclose(h_causal[0, -1], h_bidirectional[0, -1], atol=1e-5, rtol=1e-5)
    if first_same or not last_same:
        what = ("a bidirectional 4-D mask gave the causal output: the mask never reached attention"
                if first_same else "the last token changed between causal and bidirectional masks, "
                "so the 4-D mask is not read as an additive bias")
        raise MaskIgnoredError(
            f"transformers {transformers.__version__}, model_type={model_type!r}, "
            f"attn_implementation={attn_implementation!r}: {what}. Soft/bidirectional masks would be "
            f"silently wrong. Pin a transformers version where custom 4-D masks reach attention, try "
            f"attn_implementation='eager', or use the 'conan' backbone.")


def _no_autocast():
    """Autocast off on every device type a probe may meet (CPU here; CUDA when a caller runs under it)."""
    from contextlib import ExitStack

    stack = ExitStack()
    for device_type in ("cpu", "cuda"):
        if torch.is_autocast_enabled(device_type):
            stack.enter_context(torch.autocast(device_type, enabled=False))
    return stack


def _compute_dtype(model: nn.Module, device: torch.device) -> torch.dtype:
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return next(model.parameters()).dtype


def _transformers_major() -> int:
    import transformers

    return int(transformers.__version__.split(".")[0])
