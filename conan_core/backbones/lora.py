"""LoRA adapters (through ``peft``) for the ``conan`` and ``hf`` backbones.

A backbone spec enables them with a ``lora`` field::

    model: {type: hf, path: /models/qwen2-0.5b, lora: {r: 8, alpha: 16, target_modules: [q_proj, v_proj]}}

What a stage does with them:

* **start**: the stage builds (or loads from the previous stage's ``final/``) the plain model and
  :func:`apply_lora` injects fresh adapters into the named linear layers (A random, B = 0, so
  the adapted model computes exactly the function it started from) and freezes every other
  parameter: the base weights, embeddings and LM head stay bit-identical through the stage, and
  only the adapters (plus the stage's pooler, which is not part of the backbone) train;
* **checkpoints** hold the adapted model as it is (base weights under ``...base_layer.weight``,
  adapters under ``...lora_A.default.weight`` / ``...lora_B.default.weight``), so a resumed stage
  injects the same adapters and continues bit-exactly;
* **final/** holds the *merged* model (:func:`merged_state_dict`: ``W + (alpha / r) B A`` under
  the plain parameter names), a standard checkpoint: the next stage, ``Embedder.load``, ``conan
  mine`` / ``eval`` / ``export`` and transformers read it with no knowledge of LoRA. Each stage
  with LoRA therefore trains its own adapters on top of the merged result of the one before
  (LLM2Vec merges its MNTP adapters the same way before its contrastive stage).

The mask reaches attention through the adapters unchanged: LoRA wraps the projection layers only,
and the ``hf`` backbone's probe (``check_mask_reaches_attention``) still guards the attention call.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from conan_core.errors import ConanError

#: the peft adapter name conan_core uses (one adapter per stage)
ADAPTER = "default"
#: linear layers of a Llama-style block: every attention and MLP projection (LLM2Vec's choice)
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoraConfigError(ConanError, ValueError):
    """A LoRA spec that does not fit the model (a ValueError, so a config validator reports it
    with its path)."""

    exit_code = 2


class LoraSpec(BaseModel):
    """``lora`` of a backbone spec: low-rank adapters ``W + (alpha / r) B A`` on linear layers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    r: int = Field(16, gt=0, description="adapter rank")
    alpha: float = Field(32.0, gt=0, description="scale numerator: the update is (alpha / r) B A")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapter input while training")
    target_modules: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TARGETS),
        description="leaf names of the linear layers to adapt (e.g. q_proj, v_proj); each must name "
                    "at least one nn.Linear of the model")

    @field_validator("target_modules")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("target_modules is empty; name at least one linear layer (e.g. q_proj)")
        bad = [v for v in value if not v or "." in v or v != v.strip()]
        if bad:
            raise ValueError(f"target_modules holds leaf module names such as 'q_proj', got {bad}")
        return list(dict.fromkeys(value))

    @property
    def scaling(self) -> float:
        """The factor of ``B A`` in the merged weight: ``alpha / r``."""
        return self.alpha / self.r


def adapter_host(model: nn.Module) -> nn.Module:
    """The module LoRA is injected into: what a wrapper's ``lora_host()`` names (the transformers
    model inside an :class:`~conan_core.backbones.hf.HFDecoder`), else the model itself. A method
    rather than an ``isinstance`` check keeps this module below the backbones that use it."""
    host = getattr(model, "lora_host", None)
    return host() if callable(host) else model


def linear_names(model: nn.Module) -> list[str]:
    """Sorted leaf names of every ``nn.Linear`` in ``model`` (what ``target_modules`` may name)."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, nn.Linear) and name})


def check_targets(spec: LoraSpec, names: list[str], where: str) -> None:
    """:class:`LoraConfigError` when a ``target_modules`` entry names no linear layer of ``names``."""
    missing = [t for t in spec.target_modules if t not in names]
    if missing:
        from conan_core.errors import close_matches

        hints = {m: close_matches(m, names) for m in missing}
        said = "; ".join(f"{m!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for m, h in hints.items())
        raise LoraConfigError(f"model.lora.target_modules: {said} names no linear layer of {where}; "
                         f"valid: {', '.join(names)}")


def has_lora(model: nn.Module) -> bool:
    """True when LoRA layers were injected into ``model`` (directly or inside an HFDecoder)."""
    return any(f".lora_A.{ADAPTER}." in name for name, _ in model.named_parameters())


def apply_lora(model: nn.Module, spec: LoraSpec) -> nn.Module:
    """Inject LoRA layers into ``model`` in place and freeze everything else; returns ``model``.

    ``model`` is a backbone's causal LM (``ConanForCausalLM`` or an ``HFDecoder``). Adapters are
    created on the device of the layer they wrap (the meta device for ``build(meta=True)``); B starts
    at zero, so the output is unchanged until the first update. Raises :class:`ConanError` when a
    target names no linear layer, or when ``model`` already carries adapters.
    """
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as exc:
        raise ConanError("model.lora needs the peft package: pip install 'conan-core[lora]' (or pip install peft)") \
            from exc

    host = adapter_host(model)
    if has_lora(host):
        raise ConanError("apply_lora: the model already carries LoRA adapters; merge them first "
                         "(conan_core.backbones.lora.merged_state_dict) or build a fresh model")
    check_targets(spec, linear_names(host), f"the {type(host).__name__} model")
    config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                        target_modules=list(spec.target_modules), bias="none")
    inject_adapter_in_model(config, host, adapter_name=ADAPTER)
    for name, param in model.named_parameters():
        # peft already freezes the base; stated here as the contract the trainer relies on
        param.requires_grad_(f".lora_A.{ADAPTER}." in name or f".lora_B.{ADAPTER}." in name)
    return model


def merged_state_dict(state: dict[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """The plain state dict of an adapted model's ``state`` (keys of the adapter host).

    Every adapted linear layer ``X`` (keys ``X.base_layer.weight``, ``X.lora_A.default.weight``
    [r, in], ``X.lora_B.default.weight`` [out, r], optional ``X.base_layer.bias``) becomes
    ``X.weight = W + scaling * B @ A`` (computed in float32, float64 for float64 weights, then cast
    to ``W``'s dtype) and ``X.bias``; every other entry is kept as it is. Raises :class:`ConanError`
    for adapter keys it does not know (another peft method, a second adapter).
    """
    out: dict[str, torch.Tensor] = {}
    marker = ".base_layer."
    for key, value in state.items():
        if f".lora_A.{ADAPTER}." in key or f".lora_B.{ADAPTER}." in key:
            continue
        if ".lora_" in key:
            raise ConanError(f"merged_state_dict: unexpected adapter entry {key!r}; only LoRA adapters named "
                             f"{ADAPTER!r} on linear layers are merged")
        if marker not in key:
            out[key] = value
            continue
        prefix, leaf = key.split(marker, 1)
        if leaf == "weight":
            a = state[f"{prefix}.lora_A.{ADAPTER}.weight"]
            b = state[f"{prefix}.lora_B.{ADAPTER}.weight"]
            work = torch.float64 if value.dtype == torch.float64 else torch.float32
            delta = (b.to(work) @ a.to(work)) * scaling
            value = (value.to(work) + delta.to(value.device)).to(value.dtype)
        out[f"{prefix}.{leaf}"] = value
    return out


def lora_spec_of(backbone_config: Any) -> LoraSpec | None:
    """The :class:`LoraSpec` of a backbone's config (None when the backbone has no adapters)."""
    return getattr(backbone_config, "lora", None)
