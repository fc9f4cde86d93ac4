"""Base class of optimizer factories (registry kind ``optimizers``).

A factory turns ``named_parameters`` into a ``torch.optim.Optimizer`` with two parameter groups:
``decay`` (matrices) and ``no_decay`` (what :func:`param_category` calls a bias, a norm weight or an
embedding, when the factory's Config says so). The split is by name and shape only, so it works on
wrapped models (DDP ``module.`` prefixes, FSDP2 DTensors) without touching module types.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterable

import torch

from conan_core.registry import ComponentConfig

CATEGORIES = ("bias", "norm", "embedding", "weight")


def param_category(name: str, param: torch.Tensor) -> str:
    """``"bias"`` | ``"norm"`` | ``"embedding"`` | ``"weight"`` for one named parameter.

    * ``bias``: the name's last component is ``bias``;
    * ``norm``: any other parameter with fewer than 2 dimensions (RMSNorm/LayerNorm gains, scalars
      such as a learnable temperature);
    * ``embedding``: a matrix whose name mentions ``embed`` (``embed_tokens``, ``wte``/``wpe``
      spelt out as ``embeddings``): token tables are sparse-updated and decaying them shrinks rare
      tokens toward zero, the usual reason to exempt them;
    * ``weight``: everything else (linear / projection matrices).
    """
    last = name.rsplit(".", 1)[-1]
    if last == "bias":
        return "bias"
    if param.dim() < 2:
        return "norm"
    lowered = name.lower()
    if "embed" in lowered or lowered.endswith(("wte.weight", "wpe.weight")):
        return "embedding"
    return "weight"


def split_decay_groups(named_parameters: Iterable[tuple[str, torch.Tensor]], no_decay: Iterable[str],
                       weight_decay: float) -> list[dict]:
    """Two optimizer groups (empty ones dropped), in a deterministic order.

    Returns ``[{"params": [...], "weight_decay": weight_decay, "names": [...], "group": "decay"},
    {"params": [...], "weight_decay": 0.0, "names": [...], "group": "no_decay"}]``; parameters with
    ``requires_grad=False`` are left out; a parameter that appears twice (tied weights) is kept once.
    """
    exempt = set(no_decay)
    unknown = exempt - set(CATEGORIES)
    if unknown:
        raise ValueError(f"no_decay categories {sorted(unknown)} are unknown; valid: {list(CATEGORIES)}")
    decay, keep = {"params": [], "names": [], "weight_decay": float(weight_decay), "group": "decay"}, \
        {"params": [], "names": [], "weight_decay": 0.0, "group": "no_decay"}
    seen: set[int] = set()
    for name, param in named_parameters:
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        group = keep if param_category(name, param) in exempt else decay
        group["params"].append(param)
        group["names"].append(name)
    return [g for g in (decay, keep) if g["params"]]


class OptimizerFactory(ABC):
    """``build(named_parameters, lr, weight_decay=0.0) -> torch.optim.Optimizer`` (decay / no-decay groups).

    ``named_parameters`` is an iterable of ``(name, Parameter)`` (``module.named_parameters()``);
    ``lr`` is the peak learning rate (a schedule scales it per step); ``weight_decay`` applies to the
    ``decay`` group only. Each returned group carries ``"names"`` and ``"group"`` keys for logging.
    """

    class Config(ComponentConfig):
        """No fields at this level."""

    @abstractmethod
    def __init__(self, config: ComponentConfig, **runtime):
        self.config = config

    @abstractmethod
    def build(self, named_parameters, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
        """Abstract: see the class docstring."""
