"""Base class of attention backends (registry kind ``attention``) and shared helpers."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch

from conan_core.registry import ComponentConfig

if TYPE_CHECKING:
    from conan_core.masks.base import Mask, MaskContext


@dataclass(frozen=True, eq=False)
class AttentionPlan:
    """Everything one backend needs for one batch, built once per forward by
    :meth:`AttentionBackend.prepare` (eager code: it may read tensors on the host) so that the
    per-layer :meth:`AttentionBackend.attend` is tensor work only (compilable without graph
    breaks). ``path`` names the kernel path; the other fields are what that path reads:
    ``bias`` float ``[B, 1, seq_len, kv_len]`` (``log M``, ``-inf`` = closed), ``matrix`` float
    ``[B, 1, seq_len, kv_len]`` (``M``), ``score_mod`` / ``block_mask`` for FlexAttention,
    ``fallback`` another backend's plan for calls this kernel cannot run (Flex backward on CPU).
    ``mask`` / ``ctx`` are kept for fallbacks and for backends that only implement ``forward``.
    """

    backend: "AttentionBackend"
    mask: "Mask"
    ctx: "MaskContext"
    path: str
    bias: torch.Tensor | None = None
    matrix: torch.Tensor | None = None
    score_mod: Any = None
    block_mask: Any = None
    fallback: "AttentionPlan | None" = None


class AttentionBackend(ABC):
    """``backend(q, k, v, *, mask, ctx, scale=None) -> out``.

    Shapes: q ``[B, Hq, Lq, D]``, k / v ``[B, Hkv, Lk, D]`` with ``Hq`` a multiple of ``Hkv`` (GQA:
    query head ``h`` uses key/value head ``h // (Hq // Hkv)``); out ``[B, Hq, Lq, D]`` in q's dtype.
    ``Lq == ctx.seq_len`` and ``Lk == ctx.kv_len`` (equal unless keys come from a KV cache).
    ``mask`` is a masks-registry component and ``ctx`` its :class:`~conan_core.masks.base.MaskContext`;
    ``scale`` defaults to ``1 / sqrt(D)``. Every backend computes
    ``softmax(q k^T * scale + log M) v`` (``M = mask.matrix(ctx)``), which for ``mask.apply ==
    "prob_scale"`` is the same function as "softmax, multiply by M, renormalise".
    ``last_path`` names the kernel path the latest call took (for tests and logs).

    The call is split in two so a model prepares the batch once and every layer only attends:
    ``plan = backend.prepare(mask, ctx, dtype, device)`` (host-side decisions, the bias / block
    mask) then ``backend.attend(q, k, v, plan, scale)`` per layer. A backend that implements only
    :meth:`forward` works too: the default plan carries the mask and context to it.
    """

    class Config(ComponentConfig):
        """No fields at this level."""

    def __init__(self, config: ComponentConfig, **runtime):
        self.config = config
        self.last_path: str | None = None
        self._batch_key: tuple[Any, Any] | None = None
        self._batch_cache: dict[Any, Any] = {}

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: "Mask",
                 ctx: "MaskContext", scale: float | None = None) -> torch.Tensor:
        check_inputs(q, k, v, ctx)
        if scale is None:
            scale = 1.0 / math.sqrt(q.shape[-1])
        return self.forward(q, k, v, mask=mask, ctx=ctx, scale=float(scale))

    def per_batch(self, mask: "Mask", ctx: "MaskContext", name: Any, make: Callable[[], Any]) -> Any:
        """``make()`` once per (mask, ctx) pair and ``name``: every layer of a forward shares the
        context object, so one backend shared by the layers builds the bias / block mask once.
        Only the latest pair is kept (keyed by identity; contexts are immutable)."""
        if self._batch_key is None or self._batch_key[0] is not mask or self._batch_key[1] is not ctx:
            self._batch_key, self._batch_cache = (mask, ctx), {}
        if name not in self._batch_cache:
            self._batch_cache[name] = make()
        return self._batch_cache[name]

    def prepare(self, mask: "Mask", ctx: "MaskContext", dtype: torch.dtype,
                device: torch.device) -> AttentionPlan:
        """The plan of one batch for queries of ``dtype`` on ``device``. Default: carry the mask
        and context to :meth:`forward`."""
        return AttentionPlan(self, mask, ctx, "forward")

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: AttentionPlan,
               scale: float | None = None) -> torch.Tensor:
        """Attention of one layer under a plan from :meth:`prepare` (same shapes as ``__call__``;
        inputs are not re-validated). Default: :meth:`forward` with the plan's mask and context."""
        if scale is None:
            scale = 1.0 / math.sqrt(q.shape[-1])
        return self.forward(q, k, v, mask=plan.mask, ctx=plan.ctx, scale=scale)

    def planned(self, mask: "Mask", ctx: "MaskContext", q: torch.Tensor) -> AttentionPlan:
        """:meth:`prepare` for ``q``'s dtype and device, once per (mask, ctx) pair."""
        return self.per_batch(mask, ctx, ("plan", q.dtype, q.device),
                              lambda: self.prepare(mask, ctx, q.dtype, q.device))

    @abstractmethod
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: "Mask",
                ctx: "MaskContext", scale: float) -> torch.Tensor:
        """The kernel, on validated inputs (see the class docstring)."""


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ctx: "MaskContext") -> None:
    """Raise ValueError unless q/k/v have the documented shapes and match ``ctx``."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"attention expects 4-D q/k/v [B, H, L, D], got q {list(q.shape)}, "
                         f"k {list(k.shape)}, v {list(v.shape)}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {list(k.shape)} and {list(v.shape)}")
    b, hq, n, d = q.shape
    if k.shape[0] != b or k.shape[3] != d:
        raise ValueError(f"q {list(q.shape)} and k/v {list(k.shape)} must share B and D")
    if hq % k.shape[1] != 0:
        raise ValueError(f"GQA needs the query heads ({hq}) to be a multiple of the key/value heads "
                         f"({k.shape[1]})")
    if n != ctx.seq_len or k.shape[2] != ctx.kv_len or b != ctx.batch_size:
        raise ValueError(f"q has B={b}, Lq={n} and k/v Lk={k.shape[2]} but the mask context has "
                         f"B={ctx.batch_size}, seq_len={ctx.seq_len}, kv_len={ctx.kv_len}")


def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """``[B, Hkv, L, D] -> [B, Hkv * groups, L, D]``, each head repeated ``groups`` times in a row
    (the head order SDPA's ``enable_gqa`` and FlexAttention use)."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def select_backend(name: str = "auto", device: torch.device | str = "cpu",
                   requires_grad: bool = True) -> AttentionBackend:
    """Build an attention backend by key with its default config. ``"auto"`` picks:

    * CUDA: ``flex`` (soft masks computed on the fly, no L x L tensor: long contexts fit);
    * MPS: ``flex`` for inference, ``sdpa`` when ``requires_grad`` (no Flex backward on MPS);
    * CPU and others: ``sdpa`` (no Flex backward on CPU in torch 2.13, and eager Flex on CPU is
      unfused, so SDPA's fused CPU kernels win for inference too).
    """
    from conan_core.registries import REGISTRIES  # late: the registry is the one list of keys

    if name == "auto":
        kind = torch.device(device).type
        name = "flex" if kind == "cuda" or (kind == "mps" and not requires_grad) else "sdpa"
    return REGISTRIES["attention"].build({"type": name})
