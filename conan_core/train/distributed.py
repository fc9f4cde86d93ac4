"""Process-group setup from the torchrun environment, model wrapping and small collectives.

* :func:`init_distributed` reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (set by ``torchrun``) and
  starts a process group when ``WORLD_SIZE > 1``: NCCL on CUDA, gloo on CPU.
* :func:`wrap_model` chooses the data-parallel wrapper: ``none`` in one process; ``ddp``; or
  ``fsdp`` (FSDP2, ``torch.distributed.fsdp.fully_shard`` on every block of each ``nn.ModuleList``
  and then on the root). ``auto`` = FSDP2 when the model has at least
  :data:`FSDP_AUTO_MIN_PARAMS` parameters on CUDA (the 1.4B preset: its fp32 weights + AdamW state
  are ~24 GB per replica), DDP otherwise.
* Uneven data never hangs: every stage runs a fixed number of optimizer steps and each rank's
  stream loops over its share, so all ranks run the same collectives in the same order.
"""

from __future__ import annotations

import datetime
import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn

Strategy = Literal["auto", "none", "ddp", "fsdp"]
FSDP_AUTO_MIN_PARAMS = 1_000_000_000


@dataclass(frozen=True)
class DistEnv:
    """Where this process runs: ``rank`` in ``[0, world_size)``, its device and the backend (or None)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(pref: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` → ``cuda:LOCAL_RANK`` when CUDA is available, else CPU."""
    if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device: cuda was requested but torch.cuda.is_available() is False; "
                               "set device: cpu or auto")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device: str = "auto", timeout_s: float = 3600.0) -> DistEnv:
    """The process's :class:`DistEnv`; starts the process group once (idempotent).

    ``timeout_s`` bounds every collective; it is long because rank 0 alone prepares the run
    (demo corpus, tokenizer training) while the other ranks wait at a barrier."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = None
    if world > 1:
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistEnv(rank, world, local, dev, backend)


def shutdown(env: DistEnv, wait: bool = True) -> None:
    """Destroy the process group. ``wait``: meet the other ranks first, so none tears its gloo
    connections down while a peer still uses them (that aborts the peer); pass False on an error
    path, where a peer may be gone and the barrier would only hang."""
    if env.distributed and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """In-place SUM over ranks (identity in one process); returns ``tensor``."""
    if env.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: Any, env: DistEnv, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank."""
    if not env.distributed:
        return obj
    box = [obj if env.rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def average_gradients(module: nn.Module, env: DistEnv) -> None:
    """Mean of every ``.grad`` over ranks (for objectives that run their own backward passes)."""
    if not env.distributed:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= env.world_size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def choose_strategy(module: nn.Module, env: DistEnv, strategy: Strategy = "auto") -> str:
    """The wrapper :func:`wrap_model` will use: ``none`` | ``ddp`` | ``fsdp``."""
    if not env.distributed:
        return "none"
    if strategy == "auto":
        n = sum(p.numel() for p in module.parameters())
        return "fsdp" if (n >= FSDP_AUTO_MIN_PARAMS and env.device.type == "cuda") else "ddp"
    if strategy not in ("none", "ddp", "fsdp"):
        raise ValueError(f"unknown parallel strategy {strategy!r}; valid: auto, none, ddp, fsdp")
    return strategy


def wrap_model(module: nn.Module, env: DistEnv, strategy: Strategy = "auto",
               param_dtype: torch.dtype | None = None) -> tuple[nn.Module, str]:
    """``(wrapped, kind)``: ``module`` (already on ``env.device``) under DDP / FSDP2 / nothing.

    ``param_dtype`` (FSDP2 only; e.g. ``torch.bfloat16`` under bf16 autocast): the dtype parameters
    are all-gathered and computed in, with gradients reduced in float32 and the sharded master
    weights and optimizer state kept in float32 (``MixedPrecisionPolicy``). ``None`` all-gathers
    the float32 weights, twice the traffic and unsharded-block memory of bf16."""
    kind = choose_strategy(module, env, strategy)
    if kind == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [env.device.index] if env.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids), kind
    if kind == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy() if param_dtype is None else MixedPrecisionPolicy(
            param_dtype=param_dtype, reduce_dtype=torch.float32)

        # DDP broadcasts rank 0's weights at construction; fully_shard keeps each rank's own
        # values for its shard, so make every rank start from rank 0's copy first
        with torch.no_grad():
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=0)
        # shard each repeated block on its own so only one block's full weights exist at a time
        for sub in list(module.modules()):
            if isinstance(sub, nn.ModuleList):
                for block in sub:
                    fully_shard(block, mp_policy=policy)
        fully_shard(module, mp_policy=policy)
        return module, kind
    return module, kind


def no_sync(wrapped: nn.Module, kind: str, active: bool):
    """Skip the gradient all-reduce of a micro-batch that is not the last of its step."""
    if not active:
        return nullcontext()
    if kind == "ddp":
        return wrapped.no_sync()
    if kind == "fsdp":
        return _FSDPNoSync(wrapped)
    return nullcontext()


class _FSDPNoSync:
    """FSDP2's equivalent of DDP.no_sync: defer the reduce-scatter to the last micro-batch."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __enter__(self):
        self.module.set_requires_gradient_sync(False)

    def __exit__(self, *exc):
        self.module.set_requires_gradient_sync(True)
        return False


def unwrap(module: nn.Module) -> nn.Module:
    """The user module under a DDP wrapper (FSDP2 keeps the module itself)."""
    from torch.nn.parallel import DistributedDataParallel

    return module.module if isinstance(module, DistributedDataParallel) else module


# ----------------------------------------------------------------------------- state dicts
# Plain and DDP models use module/optimizer state_dict() directly; only FSDP2 needs the
# torch.distributed.checkpoint helpers (which gather shards), and importing those costs seconds.

def full_model_state(module: nn.Module, kind: str) -> dict[str, torch.Tensor]:
    """The unsharded state dict of ``module`` (the unwrapped objective); under FSDP2 a collective
    that returns the full tensors on rank 0 (CPU) and an empty dict elsewhere."""
    if kind == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return module.state_dict()


def full_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer, kind: str) -> dict:
    """The optimizer's unsharded state dict (a collective under FSDP2, full on rank 0)."""
    if kind == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(module, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return optimizer.state_dict()


def load_model_state(module: nn.Module, state: dict[str, torch.Tensor], kind: str) -> None:
    """Load a full state dict (strict) into ``module``, sharding it under FSDP2."""
    if kind == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True))
        return
    module.load_state_dict(state, strict=True)


def load_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer, state: dict, kind: str) -> None:
    if kind == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(module, optimizer, state, options=StateDictOptions(full_state_dict=True))
        return
    optimizer.load_state_dict(state)
