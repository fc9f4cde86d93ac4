"""``torch``: PyTorch's ``nn.RMSNorm`` (fused kernel when input and weight dtypes match)."""

from __future__ import annotations

from torch import nn

from conan_core.ops.norms.base import NormFactory


class TorchRMSNorm(NormFactory):
    """``make(hidden_size, eps) -> nn.RMSNorm(hidden_size, eps=eps)``."""

    def make(self, hidden_size: int, eps: float = 1e-6) -> nn.Module:
        return nn.RMSNorm(hidden_size, eps=eps)
