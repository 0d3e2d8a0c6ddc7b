"""The one device resolver: names, ``auto`` with and without CUDA, torchrun ranks, and
one-line errors for devices this installation cannot use."""

from __future__ import annotations

import pytest
import torch

from sammed3d import devices
from sammed3d.devices import DeviceError, resolve_device


@pytest.fixture()
def fake_cuda(monkeypatch: pytest.MonkeyPatch):
    """Pretend a CUDA build with ``n`` visible GPUs (no GPU is touched)."""

    def install(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.version, "cuda", "12.4")

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    return install


def test_names_are_read_case_and_space_insensitive(fake_cuda):
    fake_cuda(2)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device("Cuda:1") == torch.device("cuda", 1)
    assert resolve_device(torch.device("cuda", 1)) == torch.device("cuda", 1)


def test_auto_is_a_gpu_when_one_is_usable_else_the_cpu(fake_cuda, monkeypatch):
    fake_cuda(0)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    fake_cuda(2)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "3")  # torchrun: each process its own GPU
    assert resolve_device("auto") == torch.device("cuda", 1)  # 3 % 2
    assert resolve_device("auto", local_rank=0) == torch.device("cuda", 0)
    with pytest.raises(DeviceError, match="--device cuda: GPU 3 requested but only 2"):
        resolve_device("cuda")  # an explicit cuda is the rank's own GPU, never another one
    monkeypatch.setenv("LOCAL_RANK", "first")
    with pytest.raises(DeviceError, match="LOCAL_RANK must be an integer, got 'first'"):
        resolve_device("auto")


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "auto:0", "mps:1", "nvidia", ""])
def test_unknown_names(name):
    with pytest.raises(DeviceError) as exc:
        resolve_device(name, option="train.device")
    assert str(exc.value) == (
        f"unknown device {name!r} for train.device: expected auto, cpu, cuda, cuda:N or mps"
    )


def test_unusable_gpus_are_one_line_errors(fake_cuda, monkeypatch):
    fake_cuda(1)
    with pytest.raises(DeviceError, match=r"--device cuda:2: GPU 2 requested but only 1 CUDA"):
        resolve_device("cuda:2")
    fake_cuda(0)
    with pytest.raises(DeviceError, match="no CUDA device is visible .* use --device cpu"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(DeviceError, match=r"this torch build \(.*\) has no CUDA support"):
        resolve_device("cuda:0")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="MPS is not available here; use cpu"):
        resolve_device("mps")
    assert issubclass(DeviceError, ValueError)  # the CLI reports it as bad input (exit 2)
    assert devices.DEVICE_CHOICES == ("auto", "cpu", "cuda", "cuda:N", "mps")
