"""``ConanModel`` / ``ConanForCausalLM``: the Conan decoder as transformers ``PreTrainedModel``s.

The attention mask is an *input* of every call (a ``masks`` component plus ``alpha`` / lengths /
segment ids), never a constant of the model: the same weights run causal during LLM pretraining,
soft (alpha 0 -> 1) during weak embedding training and bidirectional afterwards.

Parameter names follow ``LlamaForCausalLM`` (``model.embed_tokens``, ``model.layers.N.self_attn.q_proj``,
..., ``lm_head``), so Llama state dicts load unchanged and vice versa.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

import torch
import transformers
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from conan_core.errors import ConanError
from conan_core.model.block import ConanBlock
from conan_core.model.configuration import ConanConfig
from conan_core.model.implementation import backend_for, implementation_name, spec_of
from conan_core.model.inputs import cached_length, mask_context, new_cache, position_ids_for, resolve_cache
from conan_core.model.rope import rope_tables

logger = logging.getLogger(__name__)

# transformers >= 5 maps tied parameters {target: source}; 4.x lists the targets
_TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])
# the output field holding the KV cache: "cache" in transformers >= 5.2x, "past_key_values" before
_CACHE_FIELD = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"


def _spec(value: Any) -> dict[str, Any]:
    """A registry spec from a config value: a bare key or a ``{"type": KEY, ...}`` dict."""
    return spec_of(value)


def _flag(value: Any, config: Any, name: str) -> bool:
    """A call's output flag, or the config's when the call leaves it None."""
    return bool(getattr(config, name, False) if value is None else value)


def _return_dict(value: bool | None, config: Any) -> bool:
    """A call's ``return_dict``, else the config's."""
    if value is not None:
        return bool(value)
    return bool(getattr(config, "return_dict", True))


class ConanPreTrainedModel(PreTrainedModel):
    """Shared transformers plumbing: config class, init, checkpointing, attention implementation.

    ``attn_implementation`` (``from_pretrained(..., attn_implementation=...)``,
    ``config._attn_implementation``, ``set_attn_implementation``) selects the attention backend:
    ``"eager"``, ``"sdpa"``, ``"flex_attention"`` or any ``attention`` registry key (see
    :mod:`conan_core.model.implementation`); left unset, the config's ``attention_backend`` runs
    and ``config._attn_implementation`` reports its name.
    """

    config_class = ConanConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["ConanBlock"]
    _keys_to_ignore_on_load_unexpected = [r"rotary_emb\.inv_freq"]  # Llama checkpoints of older versions
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_cache_class = True  # transformers 4.x reads it before handing a Cache to forward

    def get_correct_attn_implementation(self, requested_attention: str | None, is_init_check: bool = False) -> str:
        """transformers' hook for ``attn_implementation``: ``None`` keeps ``config.attention_backend``
        and returns its name; a name selects that backend and writes it to the config."""
        if requested_attention is None:
            return implementation_name(self.config.attention_backend)
        self.config.attention_backend = backend_for(requested_attention, self.config.attention_backend)
        return requested_attention

    def _set_gradient_checkpointing(self, enable: bool = True, gradient_checkpointing_func: Any = checkpoint,
                                    every_n_layers: int = 1) -> None:
        """transformers' hook behind ``gradient_checkpointing_enable(gradient_checkpointing_kwargs)``
        / ``activation_checkpointing_enable(..., every_n_layers, offload)``: the (already
        configured) checkpoint function and ``every_n_layers`` reach every :class:`ConanModel`."""
        if every_n_layers < 1:
            raise ConanError(f"every_n_layers must be >= 1 (got {every_n_layers})")
        for module in self.modules():
            if isinstance(module, ConanModel):
                module.gradient_checkpointing = enable
                module._gradient_checkpointing_func = gradient_checkpointing_func
                module.checkpoint_every = every_n_layers

    def _init_weights(self, module: nn.Module) -> None:
        """Normal(0, ``initializer_range``) for linear and embedding weights (residual output
        projections divided by ``sqrt(2 * num_hidden_layers)`` when ``scaled_residual_init``),
        ones for norm weights, zeros for biases.

        ``nn.init`` is looked up at call time: transformers 5 patches it while loading so that
        weights read from a checkpoint are not re-initialised."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            if getattr(module, "conan_residual_projection", False) and self.config.scaled_residual_init:
                std = std / math.sqrt(2.0 * self.config.num_hidden_layers)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        else:
            # Norm modules come from the ``norms`` registry (torch / compiled / apex classes):
            # recognise them by shape, a 1-D ``weight`` (gain) and optional 1-D ``bias``.
            weight = getattr(module, "weight", None)
            if isinstance(weight, nn.Parameter) and weight.dim() == 1:
                nn.init.ones_(weight)
            bias = getattr(module, "bias", None)
            if isinstance(bias, nn.Parameter) and bias.dim() == 1:
                nn.init.zeros_(bias)


class ConanModel(ConanPreTrainedModel):
    """Token embedding -> ``num_hidden_layers`` :class:`ConanBlock` -> final RMSNorm.

    The norm (``config.norm``) is built from its registry once, at construction; the attention
    backend (``config.attention_backend``) too, and again whenever ``config._attn_implementation``
    names another one.
    """

    def __init__(self, config: ConanConfig):
        super().__init__(config)
        norm_factory = self._build("norms", config.norm, "norm")
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(ConanBlock(config, norm_factory, layer_idx)
                                    for layer_idx in range(config.num_hidden_layers))
        self.norm = norm_factory.make(config.hidden_size, config.rms_norm_eps)
        self._build_attention()
        self._eager_backend = None
        # transformers' enable/disable set these through _set_gradient_checkpointing.
        self.gradient_checkpointing = False
        self._gradient_checkpointing_func = functools.partial(checkpoint, use_reentrant=False)
        self.checkpoint_every = 1
        self._default_mask = None
        self.post_init()

    @staticmethod
    def _build(kind: str, value: Any, path: str) -> Any:
        from conan_core.registries import REGISTRIES

        return REGISTRIES[kind].build(_spec(value), path)

    def _build_attention(self) -> None:
        self.attention_backend = self._build("attention", self.config.attention_backend, "attention_backend")
        self._backend_implementation = implementation_name(self.config.attention_backend)

    def _sync_attention(self) -> None:
        """Rebuild the backend when ``config._attn_implementation`` was changed on a live model."""
        requested = getattr(self.config, "_attn_implementation", None)
        if isinstance(requested, str) and requested != self._backend_implementation:
            self.config.attention_backend = backend_for(requested, self.config.attention_backend)
            self._build_attention()

    def eager_backend(self) -> Any:
        """The ``eager`` backend (built on first use): it runs calls that return attention probabilities."""
        from conan_core.ops.attention.eager import EagerAttention

        if isinstance(self.attention_backend, EagerAttention):
            return self.attention_backend
        if self._eager_backend is None:
            self._eager_backend = self._build("attention", "eager", "output_attentions")
        return self._eager_backend

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def default_mask(self) -> Any:
        """The mask used when a call passes none: ``config.default_mask`` (causal unless an export
        set it), built on first use."""
        if self._default_mask is None:
            from conan_core.registries import REGISTRIES

            spec = getattr(self.config, "default_mask", None) or "causal"
            self._default_mask = REGISTRIES["masks"].build(spec, "config.default_mask")
        return self._default_mask

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        mask: Any = None,
        alpha: float = 0.0,
        segment_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        cache: Any = None,
        past_key_values: Any = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **unused: Any,
    ) -> BaseModelOutputWithPast | tuple:
        """Hidden states of a batch.

        Args:
            input_ids: LongTensor [B, L] (or ``inputs_embeds`` float [B, L, hidden_size]).
            attention_mask: [B, P + L] of 0/1 (1 = real token; P = positions already in the
                cache, 0 without one). Padding may sit anywhere: right padding takes the fast path;
                left padding and holes get positions and masks from the real tokens only, so real
                tokens match the unpadded sequence. None = no padding.
            mask: a ``masks`` component (``config.default_mask`` when None) applied in every layer.
            alpha: schedule value in [0, 1] for the soft mask.
            segment_ids: LongTensor [B, P + L] document id per token of packed rows (document
                mask); positions then restart at each document unless ``position_ids`` is given.
            position_ids: LongTensor [B, L] RoPE positions (default: see ``model/inputs.py``).
            use_cache / cache (alias ``past_key_values``): a transformers ``DynamicCache`` to read
                and extend; ``use_cache=True`` without one starts a new cache. Needs a causal mask.
                Default ``config.use_cache`` (False: embedding training never caches).
            output_attentions: also return each layer's attention probabilities
                [B, num_attention_heads, L, P + L]; such a call runs the ``eager`` backend (the
                only one that forms them), whatever ``attn_implementation`` is.
            output_hidden_states: also return the input of every block plus the final output.
            Both flags and ``return_dict`` default to the config's values.

        Returns ``BaseModelOutputWithPast(last_hidden_state=[B, L, hidden_size] after the final
        norm, cache, hidden_states=tuple of num_hidden_layers + 1 tensors or None, attentions)``;
        with ``return_dict=False`` the tuple of its non-None fields. Rows of padding tokens carry
        no information (see ``conan_core.masks.base``).
        """
        cache = resolve_cache(cache, past_key_values)
        output_attentions = _flag(output_attentions, self.config, "output_attentions")
        output_hidden_states = _flag(output_hidden_states, self.config, "output_hidden_states")
        return_dict = _return_dict(return_dict, self.config)
        use_cache = _flag(use_cache, self.config, "use_cache")
        if (input_ids is None) == (inputs_embeds is None):
            raise ConanError("ConanModel.forward needs exactly one of input_ids [B, L] or "
                             "inputs_embeds [B, L, H]")
        self._sync_attention()
        hidden = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        batch, length = hidden.shape[:2]
        device = hidden.device
        checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        if checkpointing and (use_cache or cache is not None):
            # a recomputed block would append its keys to the cache a second time
            logger.warning("gradient checkpointing is on while training: running without a KV cache")
            use_cache, cache = False, None
        if use_cache and cache is None:
            cache = new_cache(self.config)
        ctx = mask_context(attention_mask, batch, length, cached_length(cache), alpha, segment_ids, device)
        mask = self.default_mask() if mask is None else mask
        if cache is not None and not mask.is_causal(ctx):
            raise ConanError(f"a KV cache needs a causal mask (cached keys must not see later tokens), but "
                             f"this call's mask is {type(mask).__name__}; pass mask=<causal mask> "
                             "(generate(..., mask=...) forwards it) or use_cache=False")
        if position_ids is None:
            position_ids = position_ids_for(ctx, segment_ids, device)
        compute_dtype = self._compute_dtype(hidden)
        cos, sin = rope_tables(position_ids, self.config.head_dim, self.config.rope_theta, compute_dtype)
        backend = self.eager_backend() if output_attentions else self.attention_backend
        plan = backend.prepare(mask, ctx, compute_dtype, device)

        all_hidden = [] if output_hidden_states else None
        all_probs = [] if output_attentions else None
        for index, layer in enumerate(self.layers):
            if all_hidden is not None:
                all_hidden.append(hidden)
            if checkpointing and index % self.checkpoint_every == 0:
                hidden, probs = self._gradient_checkpointing_func(layer.__call__, hidden, cos, sin, plan,
                                                                  None, output_attentions)
            else:
                hidden, probs = layer(hidden, cos, sin, plan, cache, output_attentions)
            if all_probs is not None:
                all_probs.append(probs)
        hidden = self.norm(hidden)
        if all_hidden is not None:
            all_hidden.append(hidden)
        out = BaseModelOutputWithPast(
            last_hidden_state=hidden, hidden_states=tuple(all_hidden) if all_hidden is not None else None,
            attentions=tuple(all_probs) if all_probs is not None else None,
            **{_CACHE_FIELD: cache})
        return out if return_dict else out.to_tuple()

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
               mask: Any = None, alpha: float = 0.0, segment_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``last_hidden_state`` [B, L, hidden_size] of :meth:`forward` with the same arguments
        (through ``__call__``, so module hooks run)."""
        return self(input_ids, attention_mask, mask=mask, alpha=alpha, segment_ids=segment_ids).last_hidden_state

    @staticmethod
    def _compute_dtype(hidden: torch.Tensor) -> torch.dtype:
        """dtype the projections will produce: the autocast dtype when autocast is on."""
        device_type = hidden.device.type
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
        return hidden.dtype


class ConanForCausalLM(ConanPreTrainedModel, GenerationMixin):
    """:class:`ConanModel` (attribute ``model``) plus an untied or tied ``lm_head``.

    The trainer's chunked loss uses ``model.model(...)`` hidden states and
    ``get_output_embeddings().weight`` directly; :meth:`forward` computes full logits and a
    plain shifted cross-entropy for small runs and tests. ``generate()`` works (transformers'
    ``GenerationMixin``) with a ``DynamicCache`` under the causal mask; the mask a call uses is
    ``config.default_mask`` unless ``mask=`` is given (an exported embedder's default is
    bidirectional: pass ``mask=<causal mask>`` to sample from it).
    """

    if _TRANSFORMERS_MAJOR >= 5:
        _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    else:
        _tied_weights_keys = ["lm_head.weight"]

    def __init__(self, config: ConanConfig):
        super().__init__(config)
        self.model = ConanModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()
        # config.use_cache stays False (embedding training never caches); generation does
        if getattr(self, "generation_config", None) is not None:
            self.generation_config.use_cache = True

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def get_decoder(self) -> ConanModel:
        return self.model

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        mask: Any = None,
        alpha: float = 0.0,
        segment_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        cache: Any = None,
        past_key_values: Any = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        return_hidden: bool = False,
        logits_to_keep: int | torch.Tensor = 0,
        **unused: Any,
    ) -> CausalLMOutputWithPast | tuple | torch.Tensor:
        """Logits [B, L, vocab_size] and, when ``labels`` [B, L] are given, the mean next-token
        cross-entropy (float32) of ``logits[:, :-1]`` against ``labels[:, 1:]``; label -100 and
        padding positions (``attention_mask == 0``) are ignored. Other arguments as
        :meth:`ConanModel.forward`.

        ``logits_to_keep``: an int ``n > 0`` computes logits of the last ``n`` positions only
        (what ``generate`` asks for), a 1-D LongTensor those positions; 0 keeps all.
        ``return_hidden=True`` returns only the last hidden state [B, L, hidden_size] (no LM
        head): embedding stages call the model this way so that wrappers hooked on this module's
        forward (DDP, FSDP2) see the call."""
        return_dict = _return_dict(return_dict, self.config)
        out = self.model(input_ids, attention_mask, mask=mask, alpha=alpha, segment_ids=segment_ids,
                         position_ids=position_ids, inputs_embeds=inputs_embeds, use_cache=use_cache,
                         cache=cache, past_key_values=past_key_values, output_attentions=output_attentions,
                         output_hidden_states=output_hidden_states, return_dict=True, **unused)
        if return_hidden:
            return out.last_hidden_state
        hidden = out.last_hidden_state
        if isinstance(logits_to_keep, int):
            if logits_to_keep:
                hidden = hidden[:, -logits_to_keep:]
        else:
            hidden = hidden[:, logits_to_keep]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            if logits.shape[1] != labels.shape[1]:
                raise ConanError(f"labels [B, {labels.shape[1]}] need logits of every position, but "
                                 f"logits_to_keep={logits_to_keep} kept {logits.shape[1]}; leave it 0 with labels")
            loss = shifted_cross_entropy(logits, labels, attention_mask)
        result = CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                        attentions=out.attentions, **{_CACHE_FIELD: getattr(out, _CACHE_FIELD)})
        return result if return_dict else result.to_tuple()

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
               mask: Any = None, alpha: float = 0.0, segment_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Last hidden state [B, L, hidden_size] (no LM head): ``self(..., return_hidden=True)``,
        so hooks on this module (DDP / FSDP2 root) run. Use the wrapper itself under DDP:
        ``ddp(ids, attn, mask=m, alpha=a, return_hidden=True)``."""
        return self(input_ids, attention_mask, mask=mask, alpha=alpha, segment_ids=segment_ids, return_hidden=True)


def shifted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                          attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy (float32 scalar): position t of ``logits`` [B, L, V] predicts
    ``labels[:, t + 1]`` [B, L]; label -100, the last position and padding targets
    (``attention_mask == 0``) are ignored.

    The labels are shifted instead of the logits, so no copy of the [B, L, V] logits is made."""
    targets = torch.full_like(labels, -100)
    targets[:, :-1] = labels[:, 1:]
    if attention_mask is not None:
        targets[:, :-1].masked_fill_(attention_mask[:, 1:] == 0, -100)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1).long(),
                           ignore_index=-100)


def register_auto() -> None:
    """Register ``"conan"`` with AutoConfig / AutoModel / AutoModelForCausalLM (idempotent)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    AutoConfig.register(ConanConfig.model_type, ConanConfig, exist_ok=True)
    AutoModel.register(ConanConfig, ConanModel, exist_ok=True)
    AutoModelForCausalLM.register(ConanConfig, ConanForCausalLM, exist_ok=True)
