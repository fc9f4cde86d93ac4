"""``flex``: ``torch.nn.attention.flex_attention`` with the mask's score_mod / block mask."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from pydantic import Field

from conan_core.errors import ConanError
from conan_core.masks.base import Mask, MaskContext
from conan_core.ops.attention.base import AttentionBackend, AttentionPlan
from conan_core.registry import ComponentConfig


class FlexUnavailableError(ConanError, RuntimeError):
    """Flex cannot run this call here (a backward on CPU / MPS) and ``fallback="error"``."""


class FlexAttentionBackend(AttentionBackend):
    """FlexAttention: the mask enters as a ``score_mod`` adding ``log M`` computed per element from
    (i, j, length, alpha) (only when the mask has fractional entries) and a ``BlockMask`` from its
    ``mask_mod`` (skips closed blocks, applies padding / causality). No L x L tensor is stored when
    compiled, so 32k contexts fit. ``prob_scale`` masks use the same ``log M`` (identical function,
    see :class:`~conan_core.ops.attention.sdpa.SDPAAttention`).

    CPU / MPS fallback: torch 2.13 has no FlexAttention backward on CPU or MPS. When grad mode is on
    and any of q / k / v requires grad on such a device, this backend calls the ``sdpa`` backend
    instead (``last_path = "sdpa_fallback"``; ``fallback="error"`` raises instead). Forward-only
    calls on CPU run Flex (eager, unfused: it materialises the scores, fine for tests).

    ``compile``: ``auto`` = ``torch.compile`` the kernel and the block-mask builder on CUDA (eager
    Flex is unfused and O(L^2) in memory), eager elsewhere. Compilation happens lazily on the first
    call, never at import or construction. Per-batch objects (score_mod, block mask) are cached on
    the identity of ``(mask, ctx)``: the model builds one plan per forward and every layer reuses
    the block mask. Fewer queries than keys (KV cache) build a ``seq_len x kv_len`` block mask.
    """

    class Config(ComponentConfig):
        compile: Literal["auto", "always", "never"] = Field(
            "auto", description="torch.compile flex_attention: auto = on CUDA only")
        block_size: int = Field(128, gt=0, description="BlockMask block size (tokens)")
        fallback: Literal["sdpa", "error"] = Field(
            "sdpa", description="what to do when a backward is needed on CPU/MPS (no Flex backward there)")

    def __init__(self, config: Config, **runtime):
        super().__init__(config)
        from conan_core.ops.attention.sdpa import SDPAAttention

        self._compiled: Any = None
        # built here, not on first use: a compiled block must not construct (validate) a config
        self._sdpa = SDPAAttention(SDPAAttention.Config())

    def needs_fallback(self, *tensors: torch.Tensor) -> bool:
        """True when Flex cannot run these inputs here (backward needed on CPU / MPS)."""
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
        return needs_grad and tensors[0].device.type in ("cpu", "mps")

    def use_compile(self, device: torch.device) -> bool:
        mode = self.config.compile
        return mode == "always" or (mode == "auto" and device.type == "cuda")

    def prepare(self, mask: Mask, ctx: MaskContext, dtype: torch.dtype, device: torch.device) -> AttentionPlan:
        """``score_mod`` (only when the mask has fractional entries) and the block mask, built for
        the compiled or the eager kernel as :meth:`use_compile` decides for ``device``."""
        device = torch.device(device)
        compiled = self.use_compile(device)
        score_mod = mask.score_mod(ctx) if mask.has_fractional(ctx) else None
        block_mask = mask.block_mask(ctx, block_size=self.config.block_size, compiled=compiled)
        fallback = None
        if device.type in ("cpu", "mps") and torch.is_grad_enabled() and self.config.fallback == "sdpa":
            fallback = self._sdpa.prepare(mask, ctx, dtype, device)  # the layers may need a backward
        return AttentionPlan(self, mask, ctx, "flex_compiled" if compiled else "flex_eager",
                             score_mod=score_mod, block_mask=block_mask, fallback=fallback)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: AttentionPlan,
               scale: float | None = None) -> torch.Tensor:
        if self.needs_fallback(q, k, v):
            if self.config.fallback == "error":
                raise FlexUnavailableError(f"FlexAttention has no backward on {q.device.type} in torch "
                                           f"{torch.__version__}; use attention 'sdpa' or fallback='sdpa'")
            fallback = plan.fallback if plan.fallback is not None else self._sdpa.planned(plan.mask, plan.ctx, q)
            out = self._sdpa.attend(q, k, v, fallback, scale)
            self.last_path = "sdpa_fallback"
            return out

        from torch.nn.attention.flex_attention import flex_attention

        fn = flex_attention
        if plan.path == "flex_compiled":
            if self._compiled is None:
                self._compiled = torch.compile(flex_attention)
            fn = self._compiled
        self.last_path = plan.path
        if torch.compiler.is_compiling():  # a compiled block: no eager-Flex warning to silence
            return fn(q, k, v, score_mod=plan.score_mod, block_mask=plan.block_mask, scale=scale,
                      enable_gqa=q.shape[1] != k.shape[1])
        with warnings.catch_warnings():
            # eager Flex is chosen on purpose off-CUDA; torch's "unfused implementation" hint is noise
            warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile")
            return fn(q, k, v, score_mod=plan.score_mod, block_mask=plan.block_mask, scale=scale,
                      enable_gqa=q.shape[1] != k.shape[1])

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: Mask,
                ctx: MaskContext, scale: float) -> torch.Tensor:
        return self.attend(q, k, v, self.planned(mask, ctx, q), scale)
