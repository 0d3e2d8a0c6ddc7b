"""The simulated-interaction training step (docs/faithfulness.md §8, ``train.py::interaction``).

For every sample of a micro-batch: encode the crop once, then run ``num_clicks`` iterations.
Each iteration draws a click uniformly from the error region (FN ∪ FP) of the previous
prediction (``sammed3d.clicks.sample_clicks_batch``), runs the prompt encoder with that click
and the previous low-res logits as the mask prompt (or the mask prompt alone on the mask-only
iterations), decodes mask 0, upsamples it to the crop and adds the DiceCE loss. The low-res
logits are not detached, so gradients flow through the whole chain of clicks.

The step is an ``nn.Module`` so that DistributedDataParallel can wrap it (``Sam3D`` itself has
no ``forward``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn

from sammed3d.clicks import sample_clicks_batch
from sammed3d.modeling import Sam3D
from sammed3d.training.losses import build_seg_loss, hard_dice

logger = logging.getLogger(__name__)


def mask_only_iterations(
    num_clicks: int,
    random_range: Sequence[int] | None,
    last: bool,
    rng: np.random.Generator,
) -> list[int]:
    """Indexes of the iterations that get no point prompt (published: one in [2, 8] and the last).

    Args:
        num_clicks: Iterations per sample.
        random_range: Inclusive ``[low, high]`` to draw one index from, or None.
        last: Also make the last iteration mask-only.
        rng: Source of the draw.
    """
    out: set[int] = set()
    if random_range is not None:
        low, high = int(random_range[0]), int(random_range[1])
        out.add(int(rng.integers(low, high + 1)))
    if last:
        out.add(num_clicks - 1)
    return sorted(out)


class ClickLoop(nn.Module):
    """One training forward pass: image encoding plus the simulated click chain.

    Args:
        model: The network (its parameters are this module's parameters).
        num_clicks: Iterations per sample (published 11).
        click_threshold: A voxel counts as predicted when its upsampled logit exceeds this
            (published 0.5).
        accumulate_clicks: Give all clicks so far instead of only the newest.
        detach_mask_prompt: Stop gradients between iterations.
        freeze_image_encoder: Run the encoder without autograd.
        autocast_dtype: ``torch.bfloat16`` / ``torch.float16`` for mixed precision, or None.

    Example:
        >>> loop = ClickLoop(build_model("sam_med3d_tiny"), num_clicks=3)
        >>> out = loop(image, label, seeds, mask_only=[1, 2])
        >>> out["loss"].backward()
    """

    def __init__(
        self,
        model: Sam3D,
        *,
        num_clicks: int = 11,
        click_threshold: float = 0.5,
        accumulate_clicks: bool = False,
        detach_mask_prompt: bool = False,
        freeze_image_encoder: bool = False,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if num_clicks < 1:
            raise ValueError(f"num_clicks must be >= 1, got {num_clicks}")
        self.model = model
        self.num_clicks = num_clicks
        self.click_threshold = click_threshold
        self.accumulate_clicks = accumulate_clicks
        self.detach_mask_prompt = detach_mask_prompt
        self.freeze_image_encoder = freeze_image_encoder
        self.autocast_dtype = autocast_dtype
        self.seg_loss = build_seg_loss()

    def _autocast(self, device: torch.device) -> AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)

    def forward(
        self,
        image: torch.Tensor,
        label: torch.Tensor,
        seeds: torch.Tensor,
        mask_only: Sequence[int] = (),
    ) -> dict[str, torch.Tensor]:
        """Run the click chain on a micro-batch.

        Args:
            image: ``(B, 1, S, S, S)`` normalised crops, ``S = model.img_size``.
            label: ``(B, 1, S, S, S)`` binary targets (float or bool).
            seeds: ``(B,)`` int64 per-sample seeds of the click draws (so a sample gets the same
                clicks whatever batch or rank it lands in).
            mask_only: Iteration indexes without a point prompt.

        Returns:
            ``loss``: scalar, DiceCE summed over clicks (mean over the batch);
            ``dice``: ``(num_clicks,)`` detached mean hard Dice per click;
            ``dice_per_sample``: ``(B, num_clicks)`` detached.
        """
        size = self.model.img_size
        if image.ndim != 5 or image.shape[1] != 1 or tuple(image.shape[2:]) != (size,) * 3:
            raise ValueError(
                f"image must be (B, 1, {size}, {size}, {size}) for this model, got "
                f"{tuple(image.shape)}"
            )
        if label.shape != image.shape:
            raise ValueError(
                f"label must have the image's shape {tuple(image.shape)}, got {tuple(label.shape)}"
            )
        batch = image.shape[0]
        if seeds.shape != (batch,):
            raise ValueError(f"seeds must have shape ({batch},), got {tuple(seeds.shape)}")
        device = image.device
        gt = label.float()
        gt_bool = gt > 0
        mask_only_set = {int(i) for i in mask_only}

        encoder_grad = torch.no_grad() if self.freeze_image_encoder else nullcontext()
        with self._autocast(device), encoder_grad:
            embedding = self.model.image_encoder(image)  # (B, C, g, g, g)

        generators = [torch.Generator().manual_seed(int(s)) for s in seeds.tolist()]
        low_res = torch.zeros((batch, 1, *self.model.low_res_size), device=device)
        upsampled = torch.zeros_like(gt)
        coords_so_far: list[torch.Tensor] = []
        labels_so_far: list[torch.Tensor] = []
        loss = torch.zeros((), device=device)
        dices = []
        for it in range(self.num_clicks):
            pred = upsampled.detach() > self.click_threshold
            clicks = [
                sample_clicks_batch(pred[b : b + 1], gt_bool[b : b + 1], generator=generators[b])
                for b in range(batch)
            ]
            coords_so_far.append(torch.cat([c for c, _ in clicks]))  # (B, 1, 3)
            labels_so_far.append(torch.cat([lab for _, lab in clicks]))  # (B, 1)
            if it in mask_only_set:
                point_coords = point_labels = None
            elif self.accumulate_clicks:
                point_coords = torch.cat(coords_so_far, dim=1)  # (B, it+1, 3)
                point_labels = torch.cat(labels_so_far, dim=1)
            else:
                point_coords, point_labels = coords_so_far[-1], labels_so_far[-1]
            mask_prompt = low_res.detach() if self.detach_mask_prompt else low_res
            with self._autocast(device):
                low_res, _ = self.model.decode(
                    embedding, point_coords, point_labels, mask_prompt, multimask_output=False
                )
            low_res = low_res.float()  # (B, 1, S/4, S/4, S/4)
            upsampled = self.model.upsample_logits(low_res)  # (B, 1, S, S, S)
            loss = loss + self.seg_loss(upsampled, gt)
            dices.append(hard_dice(upsampled.detach(), gt))
        dice_per_sample = torch.stack(dices, dim=1)  # (B, num_clicks)
        return {
            "loss": loss,
            "dice": dice_per_sample.mean(0),
            "dice_per_sample": dice_per_sample,
        }


__all__ = ["ClickLoop", "mask_only_iterations"]
