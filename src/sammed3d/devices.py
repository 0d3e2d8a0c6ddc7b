"""The one device resolver: ``--device`` of every command and ``device=`` of the API.

Accepted names: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``. ``auto`` picks
``cuda:<LOCAL_RANK>`` (torchrun) or ``cuda:0`` when CUDA is usable, else the CPU. A device
this installation cannot use is a :class:`DeviceError` with one line saying why and what to
pass instead; torch's own errors (``AssertionError: Torch not compiled with CUDA enabled``,
a ``RuntimeError`` listing every backend) never reach the user.
"""

from __future__ import annotations

import os
import re

import torch

#: The names :func:`resolve_device` accepts (``cuda:N`` with any index).
DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")


class DeviceError(ValueError):
    """A requested device does not exist or is not usable here (one-line message)."""


def _local_rank() -> int:
    raw = os.environ.get("LOCAL_RANK", "0")
    try:
        return int(raw)
    except ValueError:
        raise DeviceError(
            f"environment variable LOCAL_RANK must be an integer, got {raw!r}"
        ) from None


def resolve_device(
    name: str | torch.device | None = "auto",
    *,
    local_rank: int | None = None,
    option: str = "--device",
) -> torch.device:
    """Turn a device name into a usable :class:`torch.device`.

    Args:
        name: ``auto`` (or None), ``cpu``, ``cuda``, ``cuda:N``, ``mps``, or a torch.device.
        local_rank: The GPU for ``auto``/``cuda`` (default: ``$LOCAL_RANK``, else 0); under
            torchrun each process gets its own.
        option: How the setting is called in messages (``--device``, ``train.device``).

    Returns:
        The device.

    Raises:
        DeviceError: unknown name; CUDA requested on a CPU-only torch build or without a
            visible GPU; a GPU index beyond the visible ones; MPS not available.
    """
    text = "auto" if name is None else str(name).strip().lower()
    if text == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"(auto|cuda|mps)(?::(\d+))?", text)
    if m is None or (m.group(1) in ("auto", "mps") and m.group(2) is not None):
        raise DeviceError(
            f"unknown device {str(name)!r} for {option}: expected auto, cpu, cuda, cuda:N or mps"
        )
    kind, index = m.group(1), m.group(2)
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError(f"{option} mps: Apple's MPS is not available here; use cpu")
        return torch.device("mps")
    rank = _local_rank() if local_rank is None else int(local_rank)
    cuda_usable = torch.cuda.is_available()
    if kind == "auto":
        if not cuda_usable:
            return torch.device("cpu")
        count = torch.cuda.device_count()
        return torch.device("cuda", rank % count)
    if torch.version.cuda is None:
        raise DeviceError(
            f"{option} {text}: this torch build ({torch.__version__}) has no CUDA support; use "
            f"{option} cpu, or install a CUDA build of torch"
        )
    if not cuda_usable:
        raise DeviceError(
            f"{option} {text}: no CUDA device is visible (driver missing or "
            f"CUDA_VISIBLE_DEVICES empty?); use {option} cpu"
        )
    count = torch.cuda.device_count()
    gpu = int(index) if index is not None else rank
    if gpu >= count:
        raise DeviceError(
            f"{option} {text}: GPU {gpu} requested but only {count} CUDA device(s) are visible"
        )
    return torch.device("cuda", gpu)


__all__ = ["DEVICE_CHOICES", "DeviceError", "resolve_device"]
