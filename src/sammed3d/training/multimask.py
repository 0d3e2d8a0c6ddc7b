"""Training the multimask outputs at the first click (an option of our regime).

One click is ambiguous: a click in the white matter is also a click in the brain, and a
single mask trained on both answers learns to hedge (a small blob around the click). SAM's
answer (Kirillov et al., "Segment Anything", 2023, §3 and appendix A) is to predict several
masks for an ambiguous prompt, back-propagate only the one closest to the target, and train
an IoU head to rank them so that inference can keep the best. Here this is done at the first
click only; later clicks (unambiguous once a mask and corrections exist) use mask 0 as in
the published regime.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from sammed3d.modeling import Sam3D, select_by_iou

logger = logging.getLogger(__name__)


def seed_multimask_outputs(model: Sam3D, generator: torch.Generator, noise: float = 0.05) -> None:
    """Start the multimask outputs 1..M from the trained mask 0 (token and hypernetwork MLP),
    each with its own small perturbation so that the min-over-masks loss can tell them apart.

    For models whose outputs 1..M were never trained (the published regime decodes mask 0
    only); it turns M untrained outputs into M near-copies of a good one.

    Args:
        model: The model (changed in place).
        generator: Source of the perturbations (CPU generator).
        noise: Perturbation standard deviation relative to each tensor's own std.
    """
    decoder = model.mask_decoder
    with torch.no_grad():
        tokens = decoder.mask_tokens.weight
        scale = float(tokens[0].std()) * noise
        source = decoder.output_hypernetworks_mlps[0].state_dict()
        for i in range(1, decoder.num_mask_tokens):
            jitter = torch.randn(tokens[0].shape, generator=generator) * scale
            tokens[i].copy_(tokens[0] + jitter.to(tokens.device, tokens.dtype))
            target = decoder.output_hypernetworks_mlps[i]
            for name, param in target.named_parameters():
                ref = source[name]
                std = float(ref.std()) if ref.numel() > 1 else float(ref.abs().mean())
                jitter = torch.randn(ref.shape, generator=generator) * (std * noise)
                param.copy_(ref + jitter.to(ref.device, ref.dtype))
    logger.info(
        "multimask outputs 1..%d seeded from mask 0 (relative noise %.3g)",
        decoder.num_mask_tokens - 1,
        noise,
    )


def per_sample_loss(loss_fn: nn.Module, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``loss_fn`` applied to each sample alone: ``(B, 1, ...)`` logits and target -> ``(B,)``.

    For the published DiceCE with equal crop sizes the batch loss is the mean of these.
    """
    return torch.stack([loss_fn(logits[b : b + 1], target[b : b + 1]) for b in range(len(logits))])


def multimask_first_click_loss(
    loss_fn: nn.Module,
    logits: torch.Tensor,
    iou_pred: torch.Tensor,
    target: torch.Tensor,
    iou_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Min-over-masks segmentation loss plus the IoU head's regression loss.

    Args:
        loss_fn: Per-mask segmentation loss (``(1, 1, ...)`` logits and target -> scalar).
        logits: ``(B, M, ...)`` multimask logits on the target's grid.
        iou_pred: ``(B, M)`` the IoU head's predictions.
        target: ``(B, 1, ...)`` float target (area fractions or {0, 1}); a voxel is foreground
            above 0.5.
        iou_weight: Weight of the mean squared error between predicted and actual IoU.

    Returns:
        ``loss`` (scalar: mean over samples of the smallest mask loss, plus the IoU term),
        ``chosen`` ``(B, 1, ...)`` logits of the mask the IoU head ranks first (the next
        click's mask prompt; inference also weighs the stability score) and ``iou_true``
        ``(B, M)`` the actual IoU of each mask (``logits > 0``).
    """
    masks = logits.shape[1]
    losses = torch.stack(
        [per_sample_loss(loss_fn, logits[:, k : k + 1], target) for k in range(masks)], dim=1
    )  # (B, M)
    seg = losses.min(dim=1).values.mean()
    with torch.no_grad():
        pred = logits > 0
        gt = target > 0.5
        inter = (pred & gt).flatten(2).sum(-1).float()
        union = (pred | gt).flatten(2).sum(-1).float()
        iou_true = torch.where(union > 0, inter / union.clamp(min=1.0), torch.ones_like(union))
    iou_loss = torch.mean((iou_pred.float() - iou_true) ** 2)
    chosen, _ = select_by_iou(logits, iou_pred.detach())
    return seg + iou_weight * iou_loss, chosen, iou_true


__all__ = ["multimask_first_click_loss", "per_sample_loss", "seed_multimask_outputs"]
