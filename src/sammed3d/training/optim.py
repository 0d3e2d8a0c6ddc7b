"""The optimizer and the learning rate of a training run: one rule for every group and step.

The learning rate of parameter group ``g`` at optimizer step ``s`` (0-based, counted over the
whole run) in epoch ``e`` is::

    base_lr(cfg, g) * lr_factor(cfg.optim, step=s, epoch=e, total_steps=T)

- :func:`base_lr`: ``optim.lr`` for the image encoder (and the high-resolution stem),
  ``optim.lr * optim.decoder_lr_scale`` for the prompt encoder and the mask decoder (published
  ``train.py``: ``lr * 0.1``), ``optim.lr * task.layer_decay ** lr_exponent`` for the groups of a
  task model (``sammed3d.training.semantic``).
- :func:`lr_factor`: linear warm-up over ``optim.warmup_steps`` steps, times the schedule:
  ``gamma ** (number of milestones <= epoch)`` (the published ``MultiStepLR`` stepped once per
  epoch) or a cosine decay per step to ``min_lr_ratio`` over ``T = epochs * steps_per_epoch``.

:func:`build_scheduler` applies it with one ``LambdaLR`` stepped after every optimizer step, so
``param_group["lr"]`` is the rate the next step uses (warm-up included). A resumed run rebuilds
the scheduler from the config at its global step, so it follows the same sequence as an
uninterrupted run, and changed ``optim.*`` settings take effect.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from sammed3d.training.config import ConfigError

if TYPE_CHECKING:
    from sammed3d.training.config import OptimSection, TrainingConfig

#: Top-level modules of a SAM-Med3D model with their own parameter groups, and whether they
#: train at the decoder rate (``optim.lr * optim.decoder_lr_scale``).
MODULE_GROUPS = {
    "image_encoder": False,
    "hires_encoder": False,
    "prompt_encoder": True,
    "mask_decoder": True,
}

#: Suffix of the groups without weight decay (``optim.no_decay_norms_embeddings``).
NO_DECAY_SUFFIX = ".no_decay"


def no_decay_names(module: nn.Module) -> set[str]:
    """Parameters that get no weight decay: biases and other 1-D parameters (norm weights,
    scalars), embeddings (``nn.Embedding``) and position tables (``pos_embed``, ``rel_pos_*``)."""
    names = {n for n, p in module.named_parameters() if p.ndim <= 1}
    names |= {n for n, _ in module.named_parameters() if "pos_embed" in n or "rel_pos" in n}
    for prefix, sub in module.named_modules():
        if isinstance(sub, nn.Embedding):
            names.add(f"{prefix}.weight" if prefix else "weight")
    return names


def base_lr(cfg: TrainingConfig, group: dict[str, Any]) -> float:
    """The learning rate of a parameter group before warm-up and schedule.

    Args:
        cfg: The run's config (``optim.lr``, ``optim.decoder_lr_scale``, ``task.layer_decay``).
        group: A group made by :func:`build_optimizer`: ``name`` (a key of
            :data:`MODULE_GROUPS`, optionally with ``.no_decay``) or ``lr_exponent`` (task
            models).

    Raises:
        KeyError: a group of neither kind.
    """
    o = cfg.optim
    if "lr_exponent" in group:  # task model: layer-wise decay
        from sammed3d.training.semantic import semantic_base_lr

        return semantic_base_lr(cfg, group)
    decoder_rate = MODULE_GROUPS[str(group["name"]).removesuffix(NO_DECAY_SUFFIX)]
    return o.lr * o.decoder_lr_scale if decoder_rate else o.lr


def cosine_factor(step: int, total: int, min_ratio: float) -> float:
    """Cosine decay from 1 at step 0 to ``min_ratio`` at step ``total`` (then constant)."""
    progress = min(max(step, 0) / max(total, 1), 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_factor(o: OptimSection, *, step: int, epoch: int, total_steps: int) -> float:
    """The factor on every base rate at optimizer step ``step`` (0-based) of epoch ``epoch``.

    Warm-up ``min(1, (step + 1) / warmup_steps)`` times ``gamma ** #(milestones <= epoch)``
    (``schedule: multistep``) or :func:`cosine_factor` of ``step`` over ``total_steps``
    (``schedule: cosine``).
    """
    warmup = min(1.0, (step + 1) / o.warmup_steps) if o.warmup_steps > 0 else 1.0
    if o.schedule == "cosine":
        return warmup * cosine_factor(step, total_steps, o.min_lr_ratio)
    return warmup * o.gamma ** bisect.bisect_right(sorted(o.milestones), epoch)


def _module_groups(model: nn.Module, cfg: TrainingConfig) -> list[dict[str, Any]]:
    """One group per top-level module (split by weight decay if configured)."""
    groups: list[dict[str, Any]] = []
    for name in MODULE_GROUPS:
        module = getattr(model, name, None)
        if module is None:
            continue
        params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        lr = base_lr(cfg, {"name": name})
        if not cfg.optim.no_decay_norms_embeddings:
            if params:
                groups.append({"params": [p for _, p in params], "lr": lr, "name": name})
            continue
        skip = no_decay_names(module)
        decay = [p for n, p in params if n not in skip]
        plain = [p for n, p in params if n in skip]
        if decay:
            groups.append({"params": decay, "lr": lr, "name": name})
        if plain:
            groups.append(
                {"params": plain, "lr": lr, "name": name + NO_DECAY_SUFFIX, "weight_decay": 0.0}
            )
    return groups


def build_optimizer(model: nn.Module, cfg: TrainingConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, one group per module (or per layer-decay exponent
    for a task model), each at its :func:`base_lr` (the semantic groups use it through
    :func:`~sammed3d.training.semantic.semantic_base_lr`).

    Raises:
        ConfigError: nothing is trainable.
    """
    o = cfg.optim
    if cfg.task.kind == "semantic":
        from sammed3d.training.semantic import semantic_param_groups

        groups = semantic_param_groups(model, cfg)  # type: ignore[arg-type]
    else:
        groups = _module_groups(model, cfg)
    if not groups:
        raise ConfigError("no trainable parameters (everything is frozen)")
    return torch.optim.AdamW(
        groups, lr=o.lr, betas=(o.betas[0], o.betas[1]), weight_decay=o.weight_decay
    )


def apply_optim_config(optimizer: torch.optim.Optimizer, cfg: TrainingConfig) -> None:
    """Set weight decay and betas of every group from ``cfg``.

    Called after loading a saved optimizer state (which brings the saved values): settings
    changed on resume take effect; the AdamW moments are kept. Learning rates are set by
    :func:`build_scheduler`.
    """
    o = cfg.optim
    for group in optimizer.param_groups:
        no_decay = str(group["name"]).endswith(NO_DECAY_SUFFIX)
        group["weight_decay"] = 0.0 if no_decay else o.weight_decay
        group["betas"] = (o.betas[0], o.betas[1])


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: TrainingConfig,
    *,
    total_steps: int,
    start_step: int,
    epoch_of_step: Callable[[int], int],
) -> torch.optim.lr_scheduler.LambdaLR:
    """The ``LambdaLR`` of :func:`lr_factor`, positioned at optimizer step ``start_step``.

    Every group's ``initial_lr`` is set to its :func:`base_lr` (also on resume, so a changed
    ``optim.lr`` takes effect). Built with ``last_epoch=start_step - 1``, the groups' ``lr`` is
    at once the rate of step ``start_step``; step the scheduler once after every optimizer step
    and at no other time (it is never stepped before this process's first optimizer step).

    Args:
        optimizer: Groups made by :func:`build_optimizer` (a saved state may be loaded).
        cfg: The run's config.
        total_steps: Optimizer steps of the whole run (``epochs * steps_per_epoch``).
        start_step: The next optimizer step (0 on a fresh run, the global step on resume).
        epoch_of_step: The epoch an optimizer step falls in (the trainer knows its epochs).
    """
    o = cfg.optim
    for group in optimizer.param_groups:
        group["initial_lr"] = base_lr(cfg, group)

    def factor(step: int) -> float:
        return lr_factor(o, step=step, epoch=epoch_of_step(step), total_steps=total_steps)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor, last_epoch=start_step - 1)


__all__ = [
    "MODULE_GROUPS",
    "apply_optim_config",
    "base_lr",
    "build_optimizer",
    "build_scheduler",
    "cosine_factor",
    "lr_factor",
    "no_decay_names",
]
