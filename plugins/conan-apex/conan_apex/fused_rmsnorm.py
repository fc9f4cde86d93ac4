"""``apex/fused_rmsnorm``: NVIDIA apex's fused RMSNorm CUDA kernel."""

from __future__ import annotations

from pydantic import Field
from torch import nn

from conan_core.ops.norms.base import NormFactory
from conan_core.registry import ComponentConfig
from conan_apex.requirements import import_apex_attr


class FusedRMSNorm(NormFactory):
    """``make(hidden_size, eps) -> apex.normalization.FusedRMSNorm`` (one ``weight`` [hidden_size],
    init 1, so state dicts are interchangeable with the core ``torch`` / ``compiled`` norms).

    apex runs its fused kernel on CUDA tensors and a plain PyTorch RMSNorm on CPU tensors.
    Building raises :class:`~conan_apex.requirements.ApexMissingError` when NVIDIA apex or its
    ``fused_layer_norm_cuda`` extension is missing.
    """

    class Config(ComponentConfig):
        memory_efficient: bool = Field(False, description="recompute the normalised input in backward "
                                                          "instead of storing it (apex option)")

    def __init__(self, config: "FusedRMSNorm.Config", **runtime):
        super().__init__(config, **runtime)
        self._cls = import_apex_attr("apex.normalization", "FusedRMSNorm", extension="fused_layer_norm_cuda",
                                     key="apex/fused_rmsnorm", fallback="compiled")

    def make(self, hidden_size: int, eps: float = 1e-6) -> nn.Module:
        return self._cls(hidden_size, eps=eps, elementwise_affine=True,
                         memory_efficient=self.config.memory_efficient)
