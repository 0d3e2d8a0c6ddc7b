"""Task models: the SAM-Med3D image encoder as a pre-trained backbone for multi-class
segmentation (``docs/transfer.md``).

Public API::

    from sammed3d.task import TaskPredictor, load_task_checkpoint, evaluate_task

Train with ``sammed3d train --config semantic --init CKPT data.roots=[...]`` (``task.kind:
semantic``); predict with ``sammed3d predict --checkpoint TASK.pth IMAGE -o OUT``.
"""

from sammed3d.task.checkpoint import (
    encoder_state_from_checkpoint,
    load_task_checkpoint,
    read_task_checkpoint,
    save_task_checkpoint,
)
from sammed3d.task.evaluation import evaluate_task
from sammed3d.task.model import TaskModel, TaskSpec
from sammed3d.task.predictor import TaskPredictor

__all__ = [
    "TaskModel",
    "TaskPredictor",
    "TaskSpec",
    "encoder_state_from_checkpoint",
    "evaluate_task",
    "load_task_checkpoint",
    "read_task_checkpoint",
    "save_task_checkpoint",
]
