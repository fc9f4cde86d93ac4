"""``compiled``: RMSNorm whose forward is ``torch.compile``'d lazily on the first call."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from conan_core.ops.norms.base import NormFactory
from conan_core.registry import ComponentConfig


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dim; statistics in at least float32 (bf16 sums of squares lose too
    much), result cast back to ``x.dtype``. The function the compiled module compiles."""
    acc = torch.promote_types(x.dtype, torch.float32)
    xf = x.to(acc)
    y = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)
    return (y * weight.to(acc)).to(x.dtype)


class CompiledRMSNormModule(nn.RMSNorm):
    """``nn.RMSNorm`` (same parameters and state dict) whose forward runs :func:`rms_norm` through
    ``torch.compile``. The compile happens on the first forward, never at import or construction;
    if compiling fails (no compiler, unsupported backend, a failing recompile), the module warns
    once and stays eager (a genuine input error then re-raises from the eager function).
    ``compiled`` is None before the first call, then True / False."""

    def __init__(self, hidden_size: int, eps: float, *, backend: str = "inductor",
                 mode: str | None = None, dynamic: bool | None = None):
        super().__init__(hidden_size, eps=eps)
        self._compile_args = {"backend": backend, "mode": mode, "dynamic": dynamic}
        self._fn: Any = None
        self.compiled: bool | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled is False:
            return rms_norm(x, self.weight, self.eps)
        try:
            if self._fn is None:
                self._fn = torch.compile(rms_norm, **self._compile_args)
            out = self._fn(x, self.weight, self.eps)
        except Exception as exc:  # a compile failure (first call or a later recompile) must not stop training
            warnings.warn(f"conan_core: compiled RMSNorm could not compile ({type(exc).__name__}: "
                          f"{exc}); using the eager RMSNorm from now on", RuntimeWarning, stacklevel=2)
            self.compiled, self._fn = False, None
            return rms_norm(x, self.weight, self.eps)
        self.compiled = True
        return out


class CompiledRMSNorm(NormFactory):
    """``make(hidden_size, eps)`` -> :class:`CompiledRMSNormModule`."""

    class Config(ComponentConfig):
        backend: str = Field("inductor", description="torch.compile backend")
        mode: Literal["default", "reduce-overhead", "max-autotune"] = Field(
            "default", description="torch.compile mode")
        dynamic: bool | None = Field(None, description="torch.compile dynamic shapes (None = torch decides)")

    def make(self, hidden_size: int, eps: float = 1e-6) -> nn.Module:
        cfg = self.config
        return CompiledRMSNormModule(hidden_size, eps, backend=cfg.backend,
                                     mode=None if cfg.mode == "default" else cfg.mode,
                                     dynamic=cfg.dynamic)
