"""``ConanModel`` / ``ConanForCausalLM``: the Conan decoder as transformers ``PreTrainedModel``s.

The attention mask is an *input* of every call (a ``masks`` component plus ``alpha`` / lengths /
segment ids), never a constant of the model: the same weights run causal during LLM pretraining,
soft (alpha 0 -> 1) during weak embedding training and bidirectional afterwards.

Parameter names follow ``LlamaForCausalLM`` (``model.embed_tokens``, ``model.layers.N.self_attn.q_proj``,
..., ``lm_head``), so Llama state dicts load unchanged and vice versa.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import transformers
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutput

from conan_core.errors import ConanError
from conan_core.model.block import ConanBlock
from conan_core.model.configuration import ConanConfig
from conan_core.model.rope import default_position_ids, rope_tables

# transformers >= 5 maps tied parameters {target: source}; 4.x lists the targets
_TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])


def _spec(value: Any) -> dict[str, Any]:
    """A registry spec from a config value: a bare key or a ``{"type": KEY, ...}`` dict."""
    return {"type": value} if isinstance(value, str) else dict(value)


class ConanPreTrainedModel(PreTrainedModel):
    """Shared transformers plumbing: config class, init, checkpointing flags."""

    config_class = ConanConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["ConanBlock"]
    _keys_to_ignore_on_load_unexpected = [r"rotary_emb\.inv_freq"]  # Llama checkpoints of older versions

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

    The attention backend (``config.attention_backend``) and norm (``config.norm``) are built from
    their registries once, at construction.
    """

    def __init__(self, config: ConanConfig):
        super().__init__(config)
        from conan_core.registries import REGISTRIES

        self.attention_backend = REGISTRIES["attention"].build(_spec(config.attention_backend),
                                                               "attention_backend")
        norm_factory = REGISTRIES["norms"].build(_spec(config.norm), "norm")
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(ConanBlock(config, self.attention_backend, norm_factory)
                                    for _ in range(config.num_hidden_layers))
        self.norm = norm_factory.make(config.hidden_size, config.rms_norm_eps)
        # transformers' enable/disable sets these two on every module that has the flag.
        self.gradient_checkpointing = False
        self._gradient_checkpointing_func = functools.partial(checkpoint, use_reentrant=False)
        self._default_mask = None
        self.post_init()

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
        output_hidden_states: bool = False,
        return_dict: bool = True,
        **unused: Any,
    ) -> BaseModelOutput | tuple:
        """Hidden states of a right-padded batch.

        Args:
            input_ids: LongTensor [B, L] (or ``inputs_embeds`` float [B, L, hidden_size]).
            attention_mask: [B, L], 1 = real token, 0 = padding; padding must be on the right (only
                the per-row count of ones is read). None = no padding.
            mask: a ``masks`` component (causal when None) applied in every layer.
            alpha: schedule value in [0, 1] for the soft mask.
            segment_ids: LongTensor [B, L] document id per token of packed rows (document mask);
                positions then restart at each document unless ``position_ids`` is given.
            position_ids: LongTensor [B, L] RoPE positions (default ``0..L-1``).
            output_hidden_states: also return the input of every block plus the final output.

        Returns ``BaseModelOutput(last_hidden_state=[B, L, hidden_size] after the final norm,
        hidden_states=tuple of num_hidden_layers + 1 tensors or None)``; with ``return_dict=False``
        the tuple ``(last_hidden_state[, hidden_states])``. Rows past a sequence's length carry no
        information (see ``conan_core.masks.base``).
        """
        from conan_core.masks.base import MaskContext

        if unused.get("use_cache") or unused.get("past_key_values") is not None:
            raise ConanError("ConanModel has no KV cache: call it on whole sequences "
                             "(use_cache=False, past_key_values=None)")
        if (input_ids is None) == (inputs_embeds is None):
            raise ConanError("ConanModel.forward needs exactly one of input_ids [B, L] or "
                             "inputs_embeds [B, L, H]")
        hidden = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        batch, length = hidden.shape[:2]
        device = hidden.device
        if attention_mask is None:
            lengths = torch.full((batch,), length, dtype=torch.long, device=device)
        else:
            if tuple(attention_mask.shape) != (batch, length):
                raise ConanError(f"attention_mask must be [B, L] = {[batch, length]} (1 real / 0 pad, "
                                 f"right padding), got shape {list(attention_mask.shape)}")
            lengths = attention_mask.to(device=device).long().sum(-1)
        ctx = MaskContext(lengths=lengths, seq_len=length, alpha=float(alpha), segment_ids=segment_ids)
        mask = self.default_mask() if mask is None else mask
        if position_ids is None:
            position_ids = default_position_ids(batch, length, device, segment_ids)
        cos, sin = rope_tables(position_ids, self.config.head_dim, self.config.rope_theta,
                               self._compute_dtype(hidden))

        all_hidden = [] if output_hidden_states else None
        checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            if all_hidden is not None:
                all_hidden.append(hidden)
            if checkpointing:
                hidden = self._gradient_checkpointing_func(layer.__call__, hidden, cos, sin, mask, ctx)
            else:
                hidden = layer(hidden, cos, sin, mask, ctx)
        hidden = self.norm(hidden)
        if all_hidden is not None:
            all_hidden.append(hidden)
        hidden_states = tuple(all_hidden) if all_hidden is not None else None
        if not return_dict:
            return (hidden,) if hidden_states is None else (hidden, hidden_states)
        return BaseModelOutput(last_hidden_state=hidden, hidden_states=hidden_states)

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


class ConanForCausalLM(ConanPreTrainedModel):
    """:class:`ConanModel` (attribute ``model``) plus an untied or tied ``lm_head``.

    The trainer's chunked loss uses ``model.model(...)`` hidden states and
    ``get_output_embeddings().weight`` directly; :meth:`forward` computes full logits and a
    plain shifted cross-entropy for small runs and tests.
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
        output_hidden_states: bool = False,
        return_dict: bool = True,
        return_hidden: bool = False,
        **unused: Any,
    ) -> CausalLMOutput | tuple | torch.Tensor:
        """Logits [B, L, vocab_size] and, when ``labels`` [B, L] are given, the mean next-token
        cross-entropy (float32) of ``logits[:, :-1]`` against ``labels[:, 1:]``; label -100 and
        padding positions (``attention_mask == 0``) are ignored. Other arguments as
        :meth:`ConanModel.forward`.

        ``return_hidden=True`` returns only the last hidden state [B, L, hidden_size] (no LM
        head): embedding stages call the model this way so that wrappers hooked on this module's
        forward (DDP, FSDP2) see the call."""
        out = self.model(input_ids, attention_mask, mask=mask, alpha=alpha, segment_ids=segment_ids,
                         position_ids=position_ids, inputs_embeds=inputs_embeds,
                         output_hidden_states=output_hidden_states, return_dict=True, **unused)
        if return_hidden:
            return out.last_hidden_state
        logits = self.lm_head(out.last_hidden_state)
        loss = None
        if labels is not None:
            loss = shifted_cross_entropy(logits, labels, attention_mask)
        if not return_dict:
            result = (logits,) + ((out.hidden_states,) if out.hidden_states is not None else ())
            return ((loss,) + result) if loss is not None else result
        return CausalLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)

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
