"""``apex/fused_adam``: NVIDIA apex's multi-tensor FusedAdam in AdamW mode."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator

from conan_apex.requirements import import_apex_attr
from conan_core.optimizers.base import CATEGORIES, OptimizerFactory, split_decay_groups
from conan_core.registry import ComponentConfig


class FusedAdam(OptimizerFactory):
    """``build(named_parameters, lr, weight_decay) -> apex.optimizers.FusedAdam(adam_w_mode=True)``
    over the core decay / no-decay groups (same split as the core ``adamw`` key).

    Parameters must be CUDA tensors (apex's kernels are CUDA-only). Building raises
    :class:`~conan_apex.requirements.ApexMissingError` when NVIDIA apex or its ``amp_C``
    extension is missing.
    """

    class Config(ComponentConfig):
        betas: tuple[float, float] = Field((0.9, 0.999), description="Adam (beta1, beta2), each in [0, 1)")
        eps: float = Field(1e-8, gt=0, description="denominator epsilon")
        no_decay: list[Literal["bias", "norm", "embedding", "weight"]] = Field(
            default_factory=lambda: ["bias", "norm", "embedding"],
            description=f"parameter categories exempt from weight decay; categories: {list(CATEGORIES)}")
        capturable: bool = Field(False, description="CUDA-graph capturable step (apex option)")

        @field_validator("betas")
        @classmethod
        def _betas(cls, value):
            if not all(0.0 <= b < 1.0 for b in value):
                raise ValueError(f"betas must each be in [0, 1), got {value}")
            return value

    def __init__(self, config: "FusedAdam.Config", **runtime):
        self.config = config
        self._cls = import_apex_attr("apex.optimizers", "FusedAdam", extension="amp_C",
                                     key="apex/fused_adam", fallback="adamw")

    def build(self, named_parameters, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
        """apex FusedAdam (AdamW mode) over the decay / no-decay groups of ``named_parameters``."""
        groups = split_decay_groups(named_parameters, self.config.no_decay, weight_decay)
        if not groups:
            raise ValueError("the optimizer got no trainable parameters (all have requires_grad=False?)")
        devices = {p.device.type for g in groups for p in g["params"]}
        if devices != {"cuda"}:
            from conan_core.errors import ConanError

            raise ConanError(f"apex/fused_adam needs every parameter on CUDA, found {sorted(devices)}; "
                             "use the core 'adamw' optimizer on other devices")
        return self._cls(groups, lr=lr, betas=tuple(self.config.betas), eps=self.config.eps,
                         weight_decay=weight_decay, adam_w_mode=True, capturable=self.config.capturable)
