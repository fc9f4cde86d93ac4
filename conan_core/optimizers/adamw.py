"""``adamw``: torch AdamW with decay / no-decay parameter groups (RECIPE §2: AdamW, wd 0.001)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from conan_core.optimizers.base import CATEGORIES, OptimizerFactory, split_decay_groups
from conan_core.registry import ComponentConfig

# devices with a fused AdamW kernel in torch >= 2.4
_FUSED_DEVICES = ("cuda", "cpu", "mps", "xpu")


class AdamW(OptimizerFactory):
    """AdamW over two groups; ``fused="auto"`` picks torch's fused kernel when every parameter lives
    on one device type that has it (CUDA: the single-kernel update; CPU: the vectorised update),
    else the multi-tensor ``foreach`` path."""

    class Config(ComponentConfig):
        betas: tuple[float, float] = Field((0.9, 0.999), description="Adam (beta1, beta2), each in [0, 1)")
        eps: float = Field(1e-8, gt=0, description="denominator epsilon")
        fused: Literal["auto", True, False] = Field(
            "auto", description="torch fused kernel: auto = when every parameter is on a supported device")
        no_decay: list[Literal["bias", "norm", "embedding", "weight"]] = Field(
            default_factory=lambda: ["bias", "norm", "embedding"],
            description=f"parameter categories exempt from weight decay; categories: {list(CATEGORIES)}")

        def model_post_init(self, _context) -> None:
            if not all(0.0 <= b < 1.0 for b in self.betas):
                raise ValueError(f"betas must each be in [0, 1), got {self.betas}")

    def __init__(self, config: "AdamW.Config", **runtime):
        self.config = config

    def build(self, named_parameters, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
        """A ``torch.optim.AdamW`` over the decay / no-decay groups of ``named_parameters``."""
        groups = split_decay_groups(named_parameters, self.config.no_decay, weight_decay)
        if not groups:
            raise ValueError("the optimizer got no trainable parameters (all have requires_grad=False?)")
        fused = self.config.fused
        if fused == "auto":
            types = {p.device.type for g in groups for p in g["params"]}
            fused = len(types) == 1 and types.pop() in _FUSED_DEVICES
        kwargs = {"fused": True} if fused else {"foreach": True}
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(self.config.betas), eps=self.config.eps,
                                 weight_decay=weight_decay, **kwargs)
