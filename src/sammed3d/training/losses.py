"""Training loss and per-click Dice (docs/faithfulness.md §8).

The published loss is MONAI ``DiceCELoss(sigmoid=True, squared_pred=True, reduction="mean")``
on the upsampled logits of every click, summed over the clicks: soft Dice with squared
denominators (smooth 1e-5, per sample, averaged over the batch) plus BCE-with-logits averaged
over all voxels, weights 1:1. With equal crop sizes this is the mean of per-sample losses, so
DDP gradient averaging equals one process with the global batch.
"""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss, DiceLoss
from torch import nn


def build_seg_loss() -> nn.Module:
    """The published segmentation loss (MONAI DiceCE, sigmoid, squared prediction, mean).

    Call it as ``loss(logits, target)`` with ``logits`` and ``target`` of shape
    ``(B, 1, D, H, W)``; ``target`` is float in {0, 1}. Returns a scalar.
    """
    return DiceCELoss(sigmoid=True, squared_pred=True, reduction="mean")


def hard_dice(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Dice of ``logits > threshold`` against ``target > 0`` per sample.

    Args:
        logits: ``(B, 1, D, H, W)`` (or any ``(B, ...)``).
        target: Same shape; non-zero = foreground.
        threshold: Logit threshold (0 = sigmoid 0.5, the prediction rule of every pipeline).

    Returns:
        ``(B,)`` float32 Dice; 1 where both prediction and target are empty.
    """
    if logits.shape != target.shape:
        raise ValueError(
            f"logits and target must have the same shape, got {tuple(logits.shape)} and "
            f"{tuple(target.shape)}"
        )
    pred = (logits > threshold).flatten(1)
    gt = (target > 0).flatten(1)
    inter = (pred & gt).sum(1).float()
    total = (pred.sum(1) + gt.sum(1)).float()
    return torch.where(total > 0, 2.0 * inter / total.clamp(min=1.0), torch.ones_like(total))


_SOFT_DICE_LOSS = DiceLoss(sigmoid=True, squared_pred=True, reduction="none")


def soft_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice per sample, as the Dice term of :func:`build_seg_loss` measures it.

    ``2 * sum(p * t) / (sum(p ** 2) + sum(t ** 2))`` with ``p = sigmoid(logits)`` (MONAI
    ``DiceLoss(sigmoid=True, squared_pred=True)``, smoothing 1e-5), per sample and channel,
    averaged over the channels.

    Args:
        logits: ``(B, C, D, H, W)``.
        target: Same shape, float in [0, 1] (area fractions allowed).

    Returns:
        ``(B,)`` soft Dice in [0, 1], differentiable in ``logits``.

    Raises:
        ValueError: the shapes differ.
    """
    if logits.shape != target.shape:
        raise ValueError(
            f"logits and target must have the same shape, got {tuple(logits.shape)} and "
            f"{tuple(target.shape)}"
        )
    return 1.0 - _SOFT_DICE_LOSS(logits, target).flatten(1).mean(1)


def dice_fall_penalty(
    logits: torch.Tensor, target: torch.Tensor, before: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hinge on a click lowering the soft Dice: ``mean(relu(before - soft_dice(logits)))``.

    Ours (``train.dice_fall_weight``): the per-click loss already asks every click for the
    target; this adds a gradient exactly where a click made the mask worse than the one it
    was given (issue 10: "Dice does not fall as clicks are added").

    Args:
        logits: ``(B, 1, D, H, W)`` this click's logits.
        target: Same shape, float in [0, 1].
        before: ``(B,)`` the previous click's soft Dice (detached here).

    Returns:
        ``(penalty, dice)``: the scalar hinge, and this click's ``(B,)`` soft Dice, detached,
        for the next click.
    """
    dice = soft_dice(logits, target)
    return torch.relu(before.detach() - dice).mean(), dice.detach()


__all__ = ["build_seg_loss", "dice_fall_penalty", "hard_dice", "soft_dice"]
