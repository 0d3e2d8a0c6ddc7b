"""torchrun-style distributed setup: one process per device, NCCL on GPU, gloo on CPU.

``torchrun --nproc_per_node N [--nnodes M ...] -m sammed3d train ...`` sets ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; without them the run is a
single process and no process group is created. Only rank 0 logs at INFO, writes checkpoints
and TensorBoard files.
"""

from __future__ import annotations

import inspect
import logging
import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job.

    Attributes:
        rank: Global rank (0 is the main process).
        local_rank: Rank on this node (selects the GPU).
        world_size: Number of processes.
        local_world_size: Number of processes on this node.
        device: The device this process trains on.
        backend: ``"nccl"``, ``"gloo"`` or ``None`` for a single process.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """True on rank 0."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group is in use."""
        return self.backend is not None


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> ``cuda:<local_rank>`` when CUDA is available, else CPU.

    The shared resolver :func:`sammed3d.devices.resolve_device`, with one more rule for
    training: each process needs its own GPU.

    Raises:
        ValueError: ``"cuda"`` requested without a CUDA device, an unknown choice, or more
            processes than visible GPUs.
    """
    from sammed3d.devices import resolve_device as shared_resolver

    device = shared_resolver(choice, local_rank=local_rank, option="train.device")
    if device.type == "cuda" and local_rank >= torch.cuda.device_count():
        raise ValueError(
            f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA device(s) "
            "are visible"
        )
    return device


def init_distributed(device: str = "auto", timeout_minutes: float = 60.0) -> DistContext:
    """Read the torchrun environment and create the process group if ``WORLD_SIZE > 1``.

    Args:
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (see :func:`resolve_device`).
        timeout_minutes: Collective timeout (the pre-processing cache is built before training
            starts, so keep it generous).

    Returns:
        The :class:`DistContext`. NCCL is used on CUDA devices, gloo on CPU.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    local_world_size = _env_int("LOCAL_WORLD_SIZE", world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"invalid torchrun environment: RANK={rank}, WORLD_SIZE={world_size}")
    dev = resolve_device(device, local_rank)
    if world_size == 1:
        return DistContext(0, 0, 1, 1, dev, None)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {}
        if (
            dev.type == "cuda"
            and "device_id" in inspect.signature(dist.init_process_group).parameters
        ):
            kwargs["device_id"] = dev  # binds NCCL to this GPU (torch >= 2.3)
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world_size,
            timeout=timedelta(minutes=timeout_minutes),
            **kwargs,
        )
    logger.debug("rank %d/%d on %s (%s)", rank, world_size, dev, backend)
    return DistContext(rank, local_rank, world_size, local_world_size, dev, backend)


def cleanup_distributed(ctx: DistContext) -> None:
    """Synchronise and destroy the process group (a clean shutdown avoids exit-time aborts)."""
    if ctx.distributed and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """``dist.barrier()`` when distributed, else nothing."""
    if ctx.distributed:
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Mean of ``tensor`` over ranks (in place; returns it)."""
    if ctx.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= ctx.world_size
    return tensor


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True if ``flag`` is True on any rank (a collective: call it on every rank)."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or the module itself)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def maybe_no_sync(module: nn.Module, skip_sync: bool) -> AbstractContextManager[Any]:
    """``module.no_sync()`` for DDP micro-batches that only accumulate gradients."""
    if skip_sync and isinstance(module, nn.parallel.DistributedDataParallel):
        return module.no_sync()
    return nullcontext()


__all__ = [
    "DistContext",
    "all_reduce_mean",
    "any_rank",
    "barrier",
    "cleanup_distributed",
    "init_distributed",
    "maybe_no_sync",
    "resolve_device",
    "unwrap",
]
