"""``ConanConfig``: the transformers configuration of the Conan decoder (RECIPE.md §1).

Written in the classic ``__init__(**kwargs)`` style so that it works with transformers 4.46+ (plain
``PretrainedConfig``) and 5.x (dataclass configs, which still accept a custom ``__init__``).
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from conan_core.errors import ConanError


class ModelConfigError(ConanError, ValueError):
    """Sizes of a :class:`ConanConfig` that cannot form a model."""


class ConanConfig(PretrainedConfig):
    """Architecture of a Llama-style decoder (RMSNorm, RoPE, SwiGLU, GQA).

    Sizes: ``num_attention_heads`` query heads and ``num_key_value_heads`` key/value heads of
    ``head_dim`` each (``num_attention_heads % num_key_value_heads == 0``); ``hidden_size`` need
    not equal ``num_attention_heads * head_dim``. ``attention_backend`` is an ``attention``
    registry key (``"eager"``, ``"sdpa"``, ``"flex"``) or a full spec dict; ``norm`` is a ``norms``
    registry key (``"torch"``, ``"compiled"``, ``"apex/fused_rmsnorm"``) or spec dict. Both are
    run-time choices: override them when loading (``from_pretrained(dir, norm="torch")``);
    ``attn_implementation="eager" | "sdpa" | "flex_attention"`` selects the attention backend the same
    way (``conan_core.model.implementation``), and ``_attn_implementation`` reports what runs.
    Defaults are the ``tiny`` architecture (``conan_core.model.sizes.ARCHITECTURES``).
    ``scaled_residual_init`` scales the init std of the two residual output projections
    (``o_proj``, ``down_proj``) by ``1 / sqrt(2 * num_hidden_layers)`` (GPT-2 style).
    """

    model_type = "conan"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]

    def __init__(
        self,
        vocab_size: int = 2000,
        hidden_size: int = 64,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 4,
        num_key_value_heads: int | None = 2,
        head_dim: int | None = 16,
        intermediate_size: int = 172,
        max_position_embeddings: int = 512,
        rope_theta: float = 10000.0,
        rms_norm_eps: float = 1e-6,
        tie_word_embeddings: bool = False,
        initializer_range: float = 0.02,
        scaled_residual_init: bool = False,
        attention_backend: str | dict[str, Any] = "sdpa",
        norm: str | dict[str, Any] = "torch",
        pad_token_id: int | None = 0,
        bos_token_id: int | None = 1,
        eos_token_id: int | None = 2,
        default_mask: str | dict[str, Any] = "causal",
        **kwargs: Any,
    ):
        # transformers 4.x's PretrainedConfig.__init__ sets defaults for the token ids and
        # tie_word_embeddings (True!); 5.x knows none of them. So the base runs first and every
        # field of ours is assigned afterwards, which gives the same result on both.
        super().__init__(**kwargs)
        if num_key_value_heads is None:
            num_key_value_heads = num_attention_heads
        if head_dim is None:
            head_dim = hidden_size // num_attention_heads
        self.vocab_size = int(vocab_size)
        self.hidden_size = int(hidden_size)
        self.num_hidden_layers = int(num_hidden_layers)
        self.num_attention_heads = int(num_attention_heads)
        self.num_key_value_heads = int(num_key_value_heads)
        self.head_dim = int(head_dim)
        self.intermediate_size = int(intermediate_size)
        self.max_position_embeddings = int(max_position_embeddings)
        self.rope_theta = float(rope_theta)
        self.rms_norm_eps = float(rms_norm_eps)
        self.tie_word_embeddings = bool(tie_word_embeddings)
        self.initializer_range = float(initializer_range)
        self.scaled_residual_init = bool(scaled_residual_init)
        self.attention_backend = attention_backend
        self.norm = norm
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        # the masks-registry spec a forward uses when the call passes no mask: causal for the LM,
        # "bidirectional" in an exported embedder so plain AutoModel/SentenceTransformer match it
        self.default_mask = default_mask
        # embedding training encodes whole sequences and never needs a KV cache; generate() turns
        # it on through the generation config (ConanForCausalLM), a call through use_cache=True
        self.use_cache = False
        self._check()

    # A Conan call that asks for attention probabilities runs the eager backend for that call only
    # (ConanModel.forward), so the flag goes with every attn_implementation: unlike transformers'
    # default property, setting it neither switches the whole model to eager nor raises under sdpa.
    @property
    def output_attentions(self) -> bool:
        """Return each layer's attention probabilities from every call (default False)."""
        return bool(self.__dict__.get("_output_attentions", False))

    @output_attentions.setter
    def output_attentions(self, value: bool) -> None:
        self._output_attentions = bool(value)

    def _check(self) -> None:
        problems = []
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "head_dim", "intermediate_size", "max_position_embeddings"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be > 0 (got {getattr(self, name)})")
        if self.num_key_value_heads > 0 and self.num_attention_heads % self.num_key_value_heads:
            problems.append(f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                            f"num_key_value_heads ({self.num_key_value_heads}) for GQA")
        if self.head_dim % 2:
            problems.append(f"head_dim must be even for RoPE (got {self.head_dim})")
        if problems:
            raise ModelConfigError("invalid ConanConfig: " + "; ".join(problems)
                                   + ". Fix the backbone sizes in the run config.")
