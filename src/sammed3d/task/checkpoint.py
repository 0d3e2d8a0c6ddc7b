"""Task-model checkpoints, and the encoder weights of SAM-Med3D checkpoints.

A task checkpoint is a ``torch.save`` dict (``torch.load(weights_only=True)``-safe)::

    {"format": "sammed3d-task", "format_version": 1,
     "model_state_dict": {...},           # image_encoder.* (published names) + decoder.*
     "task": TaskSpec.to_dict(),           # encoder architecture, classes, pre-processing,
                                           # the encoder's origin (checkpoint, SHA-256)
     "metadata": {...}}                    # + training state when written by the trainer

The ``format`` marker keeps the two kinds apart: :func:`sammed3d.load_checkpoint` (every
command that loads a promptable model) refuses a task checkpoint with a one-line message, and
:func:`load_task_checkpoint` refuses a SAM-Med3D checkpoint the same way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sammed3d.build import (
    TASK_CHECKPOINT_FORMAT,
    CheckpointError,
    _load_state_dict_strict,
    _torch_load,
    read_checkpoint,
    write_checkpoint,
)
from sammed3d.config import ModelConfig
from sammed3d.task.model import ENCODER_FIELDS, TaskModel, TaskSpec

logger = logging.getLogger(__name__)

TASK_FORMAT_VERSION = 1


def encoder_state_from_checkpoint(
    checkpoint: str | os.PathLike[str],
    encoder_config: ModelConfig,
    *,
    allow_unsafe_pickle: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The ``image_encoder`` weights of a SAM-Med3D checkpoint, checked against an encoder.

    Args:
        checkpoint: A file or a published name (``turbo``, ``default``, ...), read with
            :func:`sammed3d.build.read_checkpoint` (the same checks as every loader).
        encoder_config: The architecture the weights must fit.
        allow_unsafe_pickle: For old published files that pickle Python objects (trusted only).

    Returns:
        ``(state_dict, origin)``: the encoder's weights (keys without ``image_encoder.``), loaded
        strictly into an encoder of ``encoder_config`` once to check them, and the origin
        record ``{"init": "checkpoint", "checkpoint", "file", "sha256"}``.

    Raises:
        FileNotFoundError: no such file or name.
        CheckpointError: not a SAM-Med3D checkpoint (a task checkpoint, a random file, no
            ``image_encoder.*`` keys), or an encoder of another architecture (the message names
            the differing fields or keys).
    """
    from sammed3d.build import build_image_encoder
    from sammed3d.paths import require_checkpoint
    from sammed3d.weights import sha256_of

    path = require_checkpoint(checkpoint)
    ckpt = read_checkpoint(path, allow_unsafe_pickle=allow_unsafe_pickle)
    if ckpt.config is not None:
        want, got = encoder_config.to_dict(), ckpt.config.to_dict()
        diffs = [
            f"{k}={got[k]!r} (expected {want[k]!r})" for k in ENCODER_FIELDS if got[k] != want[k]
        ]
        if diffs:
            from sammed3d.build import registered_names

            names = registered_names(ckpt.config)
            hint = (
                f"; it is a {names[0]}: train with model.name={names[0]} to transfer its encoder"
                if names
                else ""
            )
            raise CheckpointError(
                f"{path}: its image encoder has another architecture: {', '.join(diffs[:4])}{hint}"
            )
    state = {
        k.removeprefix("image_encoder."): v
        for k, v in ckpt.state_dict.items()
        if k.startswith("image_encoder.")
    }
    encoder = build_image_encoder(encoder_config)
    _load_state_dict_strict(encoder, state, source=f"{path} (image_encoder)")  # type: ignore[arg-type]
    origin = {
        "init": "checkpoint",
        "checkpoint": os.fspath(checkpoint),
        "file": str(path),
        "sha256": sha256_of(path),
    }
    return state, origin


def save_task_checkpoint(
    model: TaskModel,
    path: str | os.PathLike[str],
    metadata: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` atomically as a task checkpoint (``extra``: training state at top level).

    Raises:
        ValueError: ``extra`` uses a reserved key.
    """
    module = getattr(model, "module", model)  # unwrap DDP
    header = {
        "format": TASK_CHECKPOINT_FORMAT,
        "format_version": TASK_FORMAT_VERSION,
        "task": module.spec.to_dict(),
    }
    return write_checkpoint(module, header, path, metadata, extra)


def resolve_task_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint file, or a training run folder (its newest checkpoint).

    Raises:
        FileNotFoundError: no such file, or a folder without checkpoints.
    """
    p = Path(path).expanduser()
    if not p.exists():
        from sammed3d.weights import looks_like_name, lookup

        if looks_like_name(str(path)) and lookup(str(path)) is not None:
            raise FileNotFoundError(
                f"{path!r} names a promptable SAM-Med3D model, not a task model: use it with "
                "`sammed3d segment`, or train a task model on its encoder with `sammed3d train "
                f"--config semantic --init {path}` (docs/transfer.md)"
            )
        raise FileNotFoundError(f"task checkpoint not found: {p}")
    if p.is_dir():
        from sammed3d.training.checkpoint import find_latest_checkpoint

        found = find_latest_checkpoint(p)
        if found is None:
            raise FileNotFoundError(
                f"{p} is a folder without checkpoints (expected a .pth file or a training run "
                "folder with checkpoints/)"
            )
        return found
    return p


def read_task_checkpoint(
    path: str | os.PathLike[str],
) -> tuple[TaskSpec, dict[str, torch.Tensor], dict[str, Any]]:
    """``(spec, state_dict, metadata)`` of a task checkpoint file or run folder.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable, a SAM-Med3D (promptable) checkpoint, or not a task
            checkpoint at all (one line each).
    """
    return _read_task_file(resolve_task_checkpoint(path))


def _read_task_file(file: Path) -> tuple[TaskSpec, dict[str, torch.Tensor], dict[str, Any]]:
    obj = _torch_load(file, allow_unsafe_pickle=False)
    if not isinstance(obj, Mapping) or obj.get("format") != TASK_CHECKPOINT_FORMAT:
        if isinstance(obj, Mapping) and _looks_like_sam(obj):
            raise CheckpointError(
                f"{file} is a promptable SAM-Med3D checkpoint, not a task model: use it with "
                "`sammed3d segment`, or train a task model on its encoder with `sammed3d train "
                "--config semantic --init CKPT` (docs/transfer.md)"
            )
        raise CheckpointError(
            f"{file} is not a task-model checkpoint (no format {TASK_CHECKPOINT_FORMAT!r}); "
            "task checkpoints are written by `sammed3d train` with task.kind=semantic"
        )
    try:
        spec = TaskSpec.from_dict(dict(obj["task"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{file}: invalid task description: {exc}") from None
    state = obj.get("model_state_dict")
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{file} holds no model_state_dict")
    return spec, dict(state), dict(obj.get("metadata") or {})


def is_task_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a readable task-model checkpoint (False for anything else)."""
    try:
        obj = _torch_load(Path(path), allow_unsafe_pickle=False)
    except CheckpointError:
        return False
    return isinstance(obj, Mapping) and obj.get("format") == TASK_CHECKPOINT_FORMAT


def _looks_like_sam(obj: Mapping[str, Any]) -> bool:
    state = obj.get("model_state_dict", obj)
    return isinstance(state, Mapping) and any(
        isinstance(k, str) and k.removeprefix("module.").startswith("mask_decoder.") for k in state
    )


def load_task_checkpoint(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> TaskModel:
    """Build the task model of a checkpoint (file or run folder) with its weights, in eval mode.

    The file read is recorded as the model's ``checkpoint_path``; ``device`` goes through
    :func:`sammed3d.build.resolve_model_device` (``auto``, ``cpu``, ...).

    Raises:
        FileNotFoundError / CheckpointError: see :func:`read_task_checkpoint`; keys or shapes
            that do not fit the described architecture (named).
    """
    from sammed3d.build import resolve_model_device

    file = resolve_task_checkpoint(path)  # the one place the argument is resolved
    spec, state, metadata = _read_task_file(file)
    model = TaskModel(spec)
    _load_state_dict_strict(model, state, source=str(file))  # type: ignore[arg-type]
    model.metadata = metadata  # type: ignore[assignment]
    model.checkpoint_path = file  # type: ignore[assignment]
    return model.to(resolve_model_device(device)).eval()


__all__ = [
    "TASK_FORMAT_VERSION",
    "encoder_state_from_checkpoint",
    "is_task_checkpoint",
    "load_task_checkpoint",
    "read_task_checkpoint",
    "resolve_task_checkpoint",
    "save_task_checkpoint",
]
