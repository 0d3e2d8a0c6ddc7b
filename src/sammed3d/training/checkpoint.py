"""Training checkpoints of a run folder: written atomically and rotated, found, read back.

Run folder (``run.output_dir``)::

    checkpoints/step_XXXXXXXX.pth   every run.save_every_steps (the newest run.keep_last kept)
    checkpoints/final.pth           at the end
    checkpoints/latest.json         {"file": NAME, "epoch", "step_in_epoch", "global_step",
                                     "world_size"}: the newest checkpoint

A training checkpoint is a model checkpoint (:func:`sammed3d.build.save_checkpoint`, or
:func:`sammed3d.task.checkpoint.save_task_checkpoint` for ``task.kind=semantic``) with the
training state at the top level: ``epoch``, ``optimizer_state_dict``,
``lr_scheduler_state_dict``, ``scaler_state_dict``, ``train_state``, ``rng_state`` and
``train_config``. Every value loads with ``torch.load(weights_only=True)``.

Reading one back goes through the reader every command uses (``sammed3d.build``), so a broken
file gives the same one-line :class:`~sammed3d.build.CheckpointError` everywhere.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from sammed3d.build import (
    CheckpointError,
    _config_diff,
    _load_state_dict_strict,
    _torch_load,
    build_model,
    get_config,
    save_checkpoint,
    with_behaviours,
)
from sammed3d.config import ModelConfig
from sammed3d.io import atomic_write_text
from sammed3d.training.config import ConfigError, TrainingConfig, diff_configs
from sammed3d.training.optim import apply_optim_config

if TYPE_CHECKING:
    from sammed3d.modeling import Sam3D
    from sammed3d.training.distributed import DistContext

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LATEST_POINTER = "latest.json"
FINAL_NAME = "final.pth"

#: Keys a checkpoint needs to be resumed (a model-only checkpoint is an ``--init`` file).
RESUME_KEYS = ("model_state_dict", "optimizer_state_dict", "lr_scheduler_state_dict", "train_state")


def step_checkpoint_name(global_step: int) -> str:
    """``step_XXXXXXXX.pth``: names sort by step."""
    return f"step_{global_step:08d}.pth"


def checkpoint_candidates(run_dir: str | os.PathLike[str]) -> list[Path]:
    """A run's checkpoints, newest first: the ``latest.json`` pointer's file, ``final.pth``,
    then ``step_*.pth`` from the highest step down (each once; only existing files)."""
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    out: list[Path] = []
    pointer = ckpt_dir / LATEST_POINTER
    if pointer.exists():
        try:
            name = json.loads(pointer.read_text(encoding="utf-8"))["file"]
            if (ckpt_dir / name).exists():
                out.append(ckpt_dir / name)
        except (ValueError, KeyError, TypeError):
            logger.warning("ignoring unreadable %s", pointer)
    if (ckpt_dir / FINAL_NAME).exists():
        out.append(ckpt_dir / FINAL_NAME)
    out += sorted(ckpt_dir.glob("step_*.pth"), reverse=True)
    return list(dict.fromkeys(out))  # each once, newest first


def find_latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The newest checkpoint of a run (``latest.json`` pointer, else ``final.pth``, else the
    highest step), or None."""
    candidates = checkpoint_candidates(run_dir)
    return candidates[0] if candidates else None


def check_run_folder(run_dir: str | os.PathLike[str], resume: bool) -> Path | None:
    """The checkpoint to resume from (``resume``), or None for a fresh run.

    Raises:
        FileNotFoundError: ``resume`` but the run has no checkpoint.
        ConfigError: not ``resume`` but the run folder already holds checkpoints.
    """
    latest = find_latest_checkpoint(run_dir)
    if resume:
        if latest is None:
            raise FileNotFoundError(
                f"nothing to resume: no checkpoint in {Path(run_dir) / CHECKPOINT_DIR} "
                f"(expected {LATEST_POINTER} or step_*.pth)"
            )
        return latest
    if latest is not None:
        raise ConfigError(
            f"{run_dir} already holds checkpoints ({latest.name}); continue it with "
            "--resume or choose another run.output_dir"
        )
    return None


def save_training_checkpoint(
    model: nn.Module,
    run_dir: str | os.PathLike[str],
    name: str,
    *,
    metadata: Mapping[str, Any],
    state: Mapping[str, Any],
    keep_last: int,
    task: bool = False,
) -> Path:
    """Write ``checkpoints/<name>`` atomically, point ``latest.json`` at it, rotate.

    Args:
        model: The model (DDP-unwrapped); a task model when ``task``.
        run_dir: The run folder.
        name: :func:`step_checkpoint_name` or :data:`FINAL_NAME`.
        metadata: The checkpoint's ``metadata`` (plain values).
        state: The training state stored at the top level; its ``train_state`` (epoch, step in
            epoch, global step, world size) is also written to ``latest.json``.
        keep_last: ``step_*.pth`` files kept (the oldest are deleted; ``final.pth`` stays).
        task: Write a task-model checkpoint (``task.kind=semantic``).

    Returns:
        The checkpoint's path.
    """
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    path = ckpt_dir / name
    if task:
        from sammed3d.task.checkpoint import save_task_checkpoint

        save_task_checkpoint(model, path, metadata=metadata, extra=state)  # type: ignore[arg-type]
    else:
        save_checkpoint(model, path, metadata=metadata, extra=state)  # type: ignore[arg-type]
    pointer = {"file": name, **state["train_state"]}
    atomic_write_text(ckpt_dir / LATEST_POINTER, json.dumps(pointer, indent=2))
    steps = sorted(ckpt_dir.glob("step_*.pth"))
    for old in steps[: max(0, len(steps) - keep_last)]:
        old.unlink(missing_ok=True)
    return path


def read_training_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a whole training checkpoint (model, optimizer, scheduler, state, RNG, config).

    Raises:
        CheckpointError: unreadable (the same one-line message as every loader of
            ``sammed3d.build``), or a checkpoint without training state (an ``--init`` file).
    """
    path = Path(path)
    obj = _torch_load(path, allow_unsafe_pickle=False)
    missing = [k for k in RESUME_KEYS if not isinstance(obj, Mapping) or k not in obj]
    if missing:
        raise CheckpointError(
            f"{path} is not a training checkpoint (missing {missing}); use it as "
            "--init instead of --resume"
        )
    return dict(obj)


def load_resume_checkpoint(
    run_dir: str | os.PathLike[str], newest: Path
) -> tuple[Path, dict[str, Any]]:
    """Read the newest checkpoint of a run; if it is corrupt or truncated (a crash while it was
    copied, a full disk), fall back to the next older readable one, saying so.

    Returns:
        ``(path, checkpoint)`` of the checkpoint read.

    Raises:
        CheckpointError: no checkpoint of the run can be read (naming the newest's problem).
    """
    candidates = [newest] + [p for p in checkpoint_candidates(run_dir) if p != newest]
    problems: list[str] = []
    for path in candidates:
        try:
            obj = read_training_checkpoint(path)
        except CheckpointError as exc:
            problems.append(str(exc))
            logger.warning("cannot resume from %s: %s", path.name, str(exc).splitlines()[0])
            continue
        if path != newest:
            logger.warning(
                "resuming from the older checkpoint %s (global step %s) because the newest, "
                "%s, is unusable; the steps after it are redone",
                path.name,
                obj.get("train_state", {}).get("global_step", "?"),
                newest.name,
            )
        return path, obj
    raise CheckpointError(
        f"no usable checkpoint in {Path(run_dir) / CHECKPOINT_DIR} ({len(candidates)} tried): "
        f"{problems[0]}"
    )


def rng_state() -> dict[str, Any]:
    """The torch, NumPy, Python (and CUDA) RNG states as ``weights_only``-loadable values."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only if the device count fits)."""
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except (RuntimeError, IndexError):
            logger.warning("could not restore CUDA RNG states (different device count)")


@dataclass(frozen=True)
class Position:
    """Where a run stands: completed epochs, optimizer steps into the current epoch, in all."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0


def resumed_model(path: Path, obj: Mapping[str, Any], model_name: str) -> Sam3D:
    """The SAM-Med3D model of a training checkpoint already read in full.

    Raises:
        CheckpointError: trained with another architecture than ``model_name`` (the differing
            fields), or weights that do not fit (the keys).
    """
    expected = get_config(model_name)
    saved = obj.get("model_config")
    got = None if saved is None else ModelConfig.from_dict(dict(saved))
    if got is not None and got != expected:
        raise CheckpointError(
            f"{path} was trained with a different architecture than model.name={model_name!r}: "
            f"{_config_diff(got, expected)}"
        )
    model = build_model(expected)
    _load_state_dict_strict(model, obj["model_state_dict"], str(path))
    if got is not None:  # its behaviours and inference rules (lost on resume before 2026-12-03)
        model.config = with_behaviours(expected, got)  # type: ignore[assignment]
    return model


def stop_after_steps_note(stop_after_steps: int | None, step: int, total_steps: int | None) -> str:
    """`` (steps of this invocation: this run stops at step N)`` for a run resumed at ``step``
    with ``run.stop_after_steps``: the limit counts this invocation's steps, not a total.

    >>> stop_after_steps_note(30, 20, None)
    ' (steps of this invocation: this run stops at step 50)'
    >>> stop_after_steps_note(None, 20, 100)
    ' (no step limit: this run trains to step 100)'
    """
    if stop_after_steps is None:
        end = "the end" if total_steps is None else f"step {total_steps}"
        return f" (no step limit: this run trains to {end})"
    stop = step + stop_after_steps
    if total_steps is not None and stop >= total_steps:
        return (
            f" (steps of this invocation: this run stops at step {total_steps}, "
            "the end of the last epoch)"
        )
    return f" (steps of this invocation: this run stops at step {stop})"


def restore_training_state(
    path: Path,
    obj: Mapping[str, Any],
    cfg: TrainingConfig,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    ctx: DistContext,
    *,
    total_steps: int | None = None,
) -> Position:
    """Put a resumed run's optimizer, grad scaler and RNG back; return its position.

    The optimizer gets the saved AdamW moments and the current ``optim.*`` settings (changed
    settings are logged as warnings; a changed ``run.stop_after_steps`` also says where this
    invocation stops, as it counts the steps of this invocation, not a total); the learning rate
    is not read: the scheduler derives it from the config at the returned step
    (:func:`sammed3d.training.optim.build_scheduler`). RNG states are restored on rank 0 of a
    run with the saved world size.

    Args:
        total_steps: Optimizer steps of the whole run (``train.epochs`` x steps per epoch), to
            say where a changed ``run.stop_after_steps`` stops; None: not said.

    Raises:
        ConfigError: the saved optimizer state does not fit the trainable parameters.
    """
    state = obj["train_state"]
    position = Position(int(state["epoch"]), int(state["step_in_epoch"]), int(state["global_step"]))
    saved_cfg = obj.get("train_config")
    if saved_cfg is not None:
        try:
            changes = diff_configs(TrainingConfig.from_dict(saved_cfg), cfg)
        except ConfigError:
            changes = ["(saved config no longer valid)"]
        for change in changes:
            if change.startswith("run.stop_after_steps:"):
                change += stop_after_steps_note(
                    cfg.run.stop_after_steps, position.global_step, total_steps
                )
            logger.warning("resumed with a changed setting: %s", change)
    try:
        optimizer.load_state_dict(obj["optimizer_state_dict"])
    except ValueError as exc:
        raise ConfigError(
            f"{path}: the saved optimizer state does not fit the trainable parameters "
            f"(was model.freeze_image_encoder or train.find_unused_parameters changed?): {exc}"
        ) from None
    apply_optim_config(optimizer, cfg)
    if obj.get("scaler_state_dict"):
        scaler.load_state_dict(obj["scaler_state_dict"])
    saved_world = state.get("world_size", ctx.world_size)
    if saved_world != ctx.world_size:
        logger.warning(
            "resuming a run saved with world size %s on %d processes: the data order of "
            "the current epoch changes",
            saved_world,
            ctx.world_size,
        )
    elif "rng_state" in obj and ctx.is_main:
        set_rng_state(obj["rng_state"])
    logger.info(
        "resumed %s at epoch %d, step %d (global step %d)",
        path,
        position.epoch,
        position.step_in_epoch,
        position.global_step,
    )
    return position


__all__ = [
    "CHECKPOINT_DIR",
    "FINAL_NAME",
    "LATEST_POINTER",
    "Position",
    "RESUME_KEYS",
    "check_run_folder",
    "checkpoint_candidates",
    "find_latest_checkpoint",
    "load_resume_checkpoint",
    "read_training_checkpoint",
    "restore_training_state",
    "stop_after_steps_note",
    "resumed_model",
    "rng_state",
    "save_training_checkpoint",
    "set_rng_state",
    "step_checkpoint_name",
]
