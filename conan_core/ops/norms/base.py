"""Base class of norm factories (registry kind ``norms``) and the float64 RMSNorm reference."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from conan_core.registry import ComponentConfig


class NormFactory(ABC):
    """``make(hidden_size, eps) -> nn.Module`` computing RMSNorm over the last dim:
    ``y = x / sqrt(mean(x^2) + eps) * weight``; input ``[..., hidden_size]`` of any float dtype,
    output the same shape and dtype; one learnable ``weight`` [hidden_size] (init 1), so state
    dicts are interchangeable between factories (key ``weight``)."""

    class Config(ComponentConfig):
        """No fields at this level."""

    def __init__(self, config: ComponentConfig, **runtime):
        self.config = config

    @abstractmethod
    def make(self, hidden_size: int, eps: float = 1e-6) -> nn.Module:
        """A new RMSNorm module (see the class docstring)."""


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm computed in float64 (returns float64), for tests and benchmarks."""
    x64 = x.double()
    return x64 * torch.rsqrt(x64.pow(2).mean(dim=-1, keepdim=True) + eps) * weight.double()
