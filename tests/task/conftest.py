"""Fixtures of the task-model tests: tiny task models and checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sammed3d.build import get_config
from sammed3d.task.checkpoint import save_task_checkpoint
from sammed3d.task.model import TaskModel, TaskSpec


def tiny_spec(classes: tuple[str, ...] = ("blob", "speck"), **kw: object) -> TaskSpec:
    """A ``sam_med3d_tiny`` encoder (64^3 patches) with a 4-channel decoder."""
    values = {"decoder_features": 4, "encoder_name": "sam_med3d_tiny", **kw}
    return TaskSpec(get_config("sam_med3d_tiny"), classes, **values)  # type: ignore[arg-type]


def tiny_task_model(seed: int = 0, **kw: object) -> TaskModel:
    torch.manual_seed(seed)
    return TaskModel(tiny_spec(**kw)).eval()  # type: ignore[arg-type]


@pytest.fixture()
def task_checkpoint(tmp_path: Path) -> Path:
    """A randomly initialised tiny task checkpoint."""
    return save_task_checkpoint(tiny_task_model(), tmp_path / "task.pth", metadata={"x": 1})


@pytest.fixture(autouse=True)
def one_thread():
    """3-D convolutions' backward on a busy 2-core machine is ~10x slower with 2 threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
