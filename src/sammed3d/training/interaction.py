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
import math
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sammed3d.clicks import sample_clicks_batch, sample_next_click
from sammed3d.modeling import Sam3D, select_by_iou
from sammed3d.training.leaks import LEAK_FRACTION_RANGE, leaked_prompt
from sammed3d.training.losses import build_seg_loss, dice_fall_penalty, hard_dice, soft_dice
from sammed3d.training.multimask import multimask_first_click_loss

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


def autocast_context(
    device: torch.device, dtype: torch.dtype | None
) -> AbstractContextManager[Any]:
    """``torch.autocast`` on ``device`` with ``dtype``; a no-op context when ``dtype`` is None."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


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
        loss_resolution: ``"full"`` (published): loss on the logits upsampled to the crop and
            clicks from the full-resolution error. ``"low"``: loss on the model's own logits
            against the area-averaged target, later clicks drawn on that grid (much cheaper;
            the first click is always a uniform target voxel at full resolution).
        first_click_weight: Loss weight of the first click (the others weigh 1).
        center_click_fraction: ``"low"`` only: share of the corrective clicks put at the
            centre of the largest error (RITM/EDT rule) instead of uniformly in the error.
        first_click_multimask: Decode the multimask outputs at the first click, train the
            one closest to the target and the IoU head that ranks them
            (:mod:`sammed3d.training.multimask`); the next click gets the mask the IoU head
            ranks first (inference also weighs the stability score).
        iou_loss_weight: Weight of the IoU head's loss (``first_click_multimask`` only).
        centre_first_click: Share of the crops moved so that a uniform voxel of one of their
            targets lies at the crop centre, where that target's first click then is: at
            inference the ROI is centred on the first click (:func:`centre_on_first_click`).
        leak_prompt_fraction: ``"low"`` only: share of the targets whose second click gets,
            instead of the model's first mask, the target plus an attached leak as its mask
            prompt (:func:`~sammed3d.training.leaks.leaked_prompt`); that click is then drawn
            from the leaked mask's error, so it is a negative click in the leak.
        leak_prompt_any_click: Give the leaked prompt at one later click drawn uniformly
            (2nd to last) instead of always at the second; the leak keeps away from the
            negative clicks already given.
        leak_prompt_max_fraction: Largest leak volume relative to the target's (the
            smallest is 0.05; log-uniform between).
        choose_extent_fraction: ``"low"`` with ``first_click_multimask`` only: share of the
            targets whose second click is given the first-click output with the highest IoU
            against the target as mask prompt instead of the IoU head's pick (a person who
            took another extent and clicks on). The logged click-1 Dice stays the pick's.

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
        loss_resolution: str = "full",
        first_click_weight: float = 1.0,
        center_click_fraction: float = 0.0,
        first_click_multimask: bool = False,
        iou_loss_weight: float = 1.0,
        centre_first_click: float = 0.0,
        leak_prompt_fraction: float = 0.0,
        leak_prompt_any_click: bool = False,
        leak_prompt_max_fraction: float = LEAK_FRACTION_RANGE[1],
        choose_extent_fraction: float = 0.0,
        dice_fall_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if num_clicks < 1:
            raise ValueError(f"num_clicks must be >= 1, got {num_clicks}")
        if loss_resolution not in ("full", "low"):
            raise ValueError(f"loss_resolution must be 'full' or 'low', got {loss_resolution!r}")
        self.loss_resolution = loss_resolution
        self.first_click_weight = float(first_click_weight)
        self.center_click_fraction = float(center_click_fraction)
        self.model = model
        self.num_clicks = num_clicks
        self.click_threshold = click_threshold
        self.accumulate_clicks = accumulate_clicks
        self.detach_mask_prompt = detach_mask_prompt
        self.freeze_image_encoder = freeze_image_encoder
        self.autocast_dtype = autocast_dtype
        self.seg_loss = build_seg_loss()
        self.first_click_multimask = bool(first_click_multimask)
        self.iou_loss_weight = float(iou_loss_weight)
        if not 0.0 <= centre_first_click <= 1.0:
            raise ValueError(f"centre_first_click must be in [0, 1], got {centre_first_click}")
        self.centre_first_click = float(centre_first_click)
        if not 0.0 <= leak_prompt_fraction <= 1.0:
            raise ValueError(f"leak_prompt_fraction must be in [0, 1], got {leak_prompt_fraction}")
        if leak_prompt_fraction > 0 and loss_resolution != "low":
            raise ValueError("leak_prompt_fraction needs loss_resolution='low'")
        self.leak_prompt_fraction = float(leak_prompt_fraction)
        self.leak_prompt_any_click = bool(leak_prompt_any_click)
        if not 0.0 <= choose_extent_fraction <= 1.0:
            raise ValueError(
                f"choose_extent_fraction must be in [0, 1], got {choose_extent_fraction}"
            )
        if choose_extent_fraction > 0 and (
            loss_resolution != "low" or not self.first_click_multimask
        ):
            raise ValueError(
                "choose_extent_fraction needs loss_resolution='low' and first_click_multimask"
            )
        self.choose_extent_fraction = float(choose_extent_fraction)
        if not (math.isfinite(dice_fall_weight) and dice_fall_weight >= 0):
            raise ValueError(
                f"dice_fall_weight must be a finite number >= 0, got {dice_fall_weight}"
            )
        if dice_fall_weight > 0 and loss_resolution != "low":
            raise ValueError("dice_fall_weight needs loss_resolution='low'")
        self.dice_fall_weight = float(dice_fall_weight)
        if not leak_prompt_max_fraction >= LEAK_FRACTION_RANGE[0]:
            raise ValueError(
                f"leak_prompt_max_fraction must be >= {LEAK_FRACTION_RANGE[0]}, "
                f"got {leak_prompt_max_fraction}"
            )
        self.leak_fraction_range = (LEAK_FRACTION_RANGE[0], float(leak_prompt_max_fraction))

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
            label: ``(B, K, S, S, S)`` binary targets (float or bool); ``K > 1`` targets of
                one crop share its image encoding (each gets its own click chain).
            seeds: ``(B,)`` int64 per-sample seeds of the click draws (so a sample gets the same
                clicks whatever batch or rank it lands in).
            mask_only: Iteration indexes without a point prompt.

        Returns:
            ``loss``: scalar, DiceCE summed over clicks (mean over the targets);
            ``dice``: ``(num_clicks,)`` detached mean hard Dice per click;
            ``dice_per_sample``: ``(B * K, num_clicks)`` detached.
        """
        size = self.model.img_size
        if image.ndim != 5 or image.shape[1] != 1 or tuple(image.shape[2:]) != (size,) * 3:
            raise ValueError(
                f"image must be (B, 1, {size}, {size}, {size}) for this model, got "
                f"{tuple(image.shape)}"
            )
        if (
            label.ndim != 5
            or label.shape[0] != image.shape[0]
            or label.shape[2:] != image.shape[2:]
        ):
            raise ValueError(
                f"label must be (B, K, S, S, S) with the image's B and S "
                f"{tuple(image.shape)}, got {tuple(label.shape)}"
            )
        batch = image.shape[0]
        if seeds.shape != (batch,):
            raise ValueError(f"seeds must have shape ({batch},), got {tuple(seeds.shape)}")
        targets = label.shape[1]
        device = image.device
        centred = torch.zeros(batch * targets, dtype=torch.bool)
        if self.centre_first_click > 0:
            image, label, chosen = centre_on_first_click(
                image, label, seeds, self.centre_first_click
            )
            for b, k in enumerate(chosen.tolist()):
                if k >= 0:
                    centred[b * targets + k] = True
        gt = label.float().reshape(batch * targets, 1, *label.shape[2:])
        if targets > 1:  # one click chain per target, distinct click seeds
            offsets = torch.arange(targets, device=seeds.device).repeat(batch)
            seeds = seeds.repeat_interleave(targets) + offsets
            batch = batch * targets
        gt_bool = gt > 0
        mask_only_set = {int(i) for i in mask_only}

        encoder_grad = torch.no_grad() if self.freeze_image_encoder else nullcontext()
        with autocast_context(device, self.autocast_dtype), encoder_grad:
            embedding = self.model.encode(image)
        if targets > 1:
            embedding = embedding.repeat_interleave(targets)
        if self.loss_resolution == "low":
            return self._forward_low(embedding, gt, seeds, mask_only_set, centred)

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
            coords = torch.cat([c for c, _ in clicks])  # (B, 1, 3)
            if it == 0:
                coords[centred.to(coords.device)] = float(self.model.img_size // 2)
            coords_so_far.append(coords)
            labels_so_far.append(torch.cat([lab for _, lab in clicks]))  # (B, 1)
            if it in mask_only_set:
                point_coords = point_labels = None
            elif self.accumulate_clicks:
                point_coords = torch.cat(coords_so_far, dim=1)  # (B, it+1, 3)
                point_labels = torch.cat(labels_so_far, dim=1)
            else:
                point_coords, point_labels = coords_so_far[-1], labels_so_far[-1]
            mask_prompt = low_res.detach() if self.detach_mask_prompt else low_res
            multi = self.first_click_multimask and it == 0 and point_coords is not None
            with autocast_context(device, self.autocast_dtype):
                low_res, iou_pred = self.model.decode(
                    embedding, point_coords, point_labels, mask_prompt, multimask_output=multi
                )
            low_res = low_res.float()  # (B, 1 or M, S/4, S/4, S/4)
            upsampled = self.model.upsample_logits(low_res)  # (B, 1 or M, S, S, S)
            if multi:
                step_loss, upsampled, _ = multimask_first_click_loss(
                    self.seg_loss, upsampled, iou_pred, gt, self.iou_loss_weight
                )
                low_res = select_by_iou(low_res, iou_pred.detach())[0]
                loss = loss + step_loss
            else:
                loss = loss + self.seg_loss(upsampled, gt)
            dices.append(hard_dice(upsampled.detach(), gt))
        dice_per_sample = torch.stack(dices, dim=1)  # (B, num_clicks)
        return {
            "loss": loss,
            "dice": dice_per_sample.mean(0),
            "dice_per_sample": dice_per_sample,
        }

    def _forward_low(
        self,
        embedding: Any,
        gt: torch.Tensor,
        seeds: torch.Tensor,
        mask_only: set[int],
        centred: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """The click chain with loss and corrective clicks on the model's logit grid."""
        batch = gt.shape[0]
        device = gt.device
        low_size = tuple(int(v) for v in self.model.low_res_size)
        factor = gt.shape[-1] // low_size[-1]
        target = F.avg_pool3d(gt, factor) if factor > 1 else gt  # area fraction per cell
        target_bool = target > 0.5
        # a target thinner than half a cell everywhere: every cell it touches counts
        thin = ~target_bool.flatten(1).any(1)
        target_bool[thin] = target[thin] > 0
        rngs = [np.random.default_rng(int(s) & 0xFFFFFFFFFFFFFFFF) for s in seeds.tolist()]
        # a stream of its own, so that runs without leaks draw exactly the clicks they did
        leak_rngs = [
            np.random.default_rng([int(s) & 0xFFFFFFFFFFFF, 0x1EA]) for s in seeds.tolist()
        ]
        leak_at = self._leak_iterations(leak_rngs)
        # a stream of its own too: which targets refine the output closest to the target
        chosen = torch.tensor(
            [
                self.choose_extent_fraction > 0
                and np.random.default_rng([int(s) & 0xFFFFFFFFFFFF, 0xE87]).random()
                < self.choose_extent_fraction
                for s in seeds.tolist()
            ],
            dtype=torch.bool,
        )
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds.tolist()]
        low_res = torch.zeros((batch, 1, *low_size), device=device)
        coords_so_far: list[torch.Tensor] = []
        labels_so_far: list[torch.Tensor] = []
        loss = torch.zeros((), device=device)
        dices = []
        soft_before: torch.Tensor | None = None  # the previous click's soft Dice (fall hinge)
        for it in range(self.num_clicks):
            if it == 0:
                clicks = [
                    sample_clicks_batch(
                        torch.zeros_like(gt[b : b + 1], dtype=torch.bool),
                        gt[b : b + 1] > 0,
                        generator=generators[b],
                    )
                    for b in range(batch)
                ]
                coords = torch.cat([c for c, _ in clicks])  # (B, 1, 3) crop voxels
                coords[centred.to(coords.device)] = float(self.model.img_size // 2)
                labels = torch.cat([lab for _, lab in clicks])
            else:
                if (leak_at == it).any():
                    low_res = self._leak_prompts(
                        low_res.detach(),
                        target_bool,
                        leak_rngs,
                        leak_at == it,
                        coords_so_far,
                        labels_so_far,
                        factor,
                    )
                pred = low_res.detach() > self.click_threshold
                coords, labels = self._corrective_clicks(pred, target_bool, gt, factor, rngs)
            coords_so_far.append(coords)
            labels_so_far.append(labels)
            if it in mask_only:
                point_coords = point_labels = None
            elif self.accumulate_clicks:
                point_coords = torch.cat(coords_so_far, dim=1)
                point_labels = torch.cat(labels_so_far, dim=1)
            else:
                point_coords, point_labels = coords, labels
            mask_prompt = low_res.detach() if self.detach_mask_prompt else low_res
            multi = self.first_click_multimask and it == 0 and point_coords is not None
            with autocast_context(device, self.autocast_dtype):
                low_res, iou_pred = self.model.decode(
                    embedding, point_coords, point_labels, mask_prompt, multimask_output=multi
                )
            low_res = low_res.float()
            weight = self.first_click_weight if it == 0 else 1.0
            if multi:
                outputs = low_res
                step_loss, low_res, iou_true = multimask_first_click_loss(
                    self.seg_loss, outputs, iou_pred, target, self.iou_loss_weight
                )
                loss = loss + weight * step_loss
                dices.append(hard_dice(low_res.detach(), target_bool.float()))
                if bool(chosen.any()):
                    best = iou_true.argmax(dim=1)  # (B,)
                    closest = outputs[torch.arange(batch), best][:, None]
                    keep = chosen.to(device).view(-1, *([1] * (low_res.dim() - 1)))
                    low_res = torch.where(keep, closest, low_res)
                if self.dice_fall_weight > 0:
                    soft_before = soft_dice(low_res.detach(), target)
                continue
            loss = loss + weight * self.seg_loss(low_res, target)
            if self.dice_fall_weight > 0:
                if soft_before is None:
                    soft_before = soft_dice(low_res.detach(), target)
                else:
                    fall, soft_before = dice_fall_penalty(low_res, target, soft_before)
                    loss = loss + self.dice_fall_weight * fall
            dices.append(hard_dice(low_res.detach(), target_bool.float()))
        dice_per_sample = torch.stack(dices, dim=1)
        return {"loss": loss, "dice": dice_per_sample.mean(0), "dice_per_sample": dice_per_sample}

    def _leak_iterations(self, rngs: list[np.random.Generator]) -> np.ndarray:
        """Per sample, the iteration that gets a leaked prompt, or -1 (drawn from ``rngs``)."""
        out = np.full(len(rngs), -1)
        if self.leak_prompt_fraction <= 0 or self.num_clicks < 2:
            return out
        for b, rng in enumerate(rngs):
            if rng.random() < self.leak_prompt_fraction:
                out[b] = int(rng.integers(1, self.num_clicks)) if self.leak_prompt_any_click else 1
        return out

    def _leak_prompts(
        self,
        low_res: torch.Tensor,
        target: torch.Tensor,
        rngs: list[np.random.Generator],
        chosen: np.ndarray,
        coords_so_far: list[torch.Tensor],
        labels_so_far: list[torch.Tensor],
        factor: int,
    ) -> torch.Tensor:
        """``low_res`` with a leaked target as the prompt of the ``chosen`` samples (a new
        tensor; the others keep the model's mask)."""
        out = low_res.clone()
        coords = torch.cat(coords_so_far, dim=1).cpu()  # (B, N, 3) crop voxels
        labels = torch.cat(labels_so_far, dim=1).cpu()
        for b in np.flatnonzero(chosen).tolist():
            negatives = (coords[b][labels[b] == 0] // factor).long()
            keep_out = negatives if negatives.shape[0] else None
            prompt = leaked_prompt(target[b, 0].cpu(), rngs[b], keep_out, self.leak_fraction_range)
            if prompt is not None:
                out[b, 0] = prompt.to(out.device, out.dtype)
        return out

    def _corrective_clicks(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        gt: torch.Tensor,
        factor: int,
        rngs: list[np.random.Generator],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One corrective click per sample from the low-res error, in crop voxels.

        The cell is drawn uniformly from the error (or, for ``center_click_fraction`` of the
        clicks, at the centre of the largest error, RITM rule); the voxel inside the cell is
        one whose full-resolution label agrees with the click (a positive click always lies in
        the target), else the cell centre.
        """
        coords, labels = [], []
        for b, rng in enumerate(rngs):
            strategy = "center" if rng.random() < self.center_click_fraction else "random"
            click = sample_next_click(
                pred[b, 0].cpu().numpy(), target[b, 0].cpu().numpy(), strategy=strategy, rng=rng
            )
            cell = np.asarray(click.coord)
            block = gt[b, 0][
                cell[0] * factor : (cell[0] + 1) * factor,
                cell[1] * factor : (cell[1] + 1) * factor,
                cell[2] * factor : (cell[2] + 1) * factor,
            ]
            agree = (block > 0) if click.positive else (block <= 0)
            where = agree.nonzero()
            if where.shape[0]:
                offset = where[int(rng.integers(where.shape[0]))].cpu().numpy()
            else:
                offset = np.full(3, (factor - 1) // 2)
            coords.append(cell * factor + offset)
            labels.append(int(click.positive))
        device = gt.device
        return (
            torch.tensor(np.array(coords), dtype=torch.float32, device=device)[:, None, :],
            torch.tensor(labels, dtype=torch.int64, device=device)[:, None],
        )


def centre_on_first_click(
    image: torch.Tensor, label: torch.Tensor, seeds: torch.Tensor, share: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move a share of the crops so that a uniform voxel of one of their targets is the centre.

    At inference the ROI is centred on the first click (voxel ``S // 2`` on every axis, the
    published centring); a model trained only on clicks anywhere in the crop learns a
    position prior instead (e.g. "a click at the centre is a small lesion"). Content moved out
    of the crop is dropped and the uncovered part filled with the crop's minimum (after the
    z-score: the background, as padding outside a volume is at inference). Another target of
    the crop that keeps less than half of its voxels is replaced by the centred one (its own
    click chain then starts elsewhere in it).

    Args:
        image: ``(B, 1, S, S, S)``.
        label: ``(B, K, S, S, S)``; one non-empty target, drawn uniformly, gives the voxel.
        seeds: ``(B,)`` per-sample seeds (the choices are a function of the seed alone).
        share: Probability that a crop is moved.

    Returns:
        The moved ``image`` and ``label`` (new tensors) and ``(B,)`` int64: the index of the
        target centred in each crop, -1 where the crop was not moved (or all its targets are
        empty).
    """
    size = image.shape[-1]
    centre = size // 2
    image, label = image.clone(), label.clone()
    chosen = torch.full((image.shape[0],), -1, dtype=torch.int64)
    for b, seed in enumerate(seeds.tolist()):
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFFFFFF, 0xC3])
        if rng.random() >= share:
            continue
        filled = [k for k in range(label.shape[1]) if bool((label[b, k] > 0).any())]
        if not filled:
            continue
        k = filled[int(rng.integers(len(filled)))]
        where = (label[b, k] > 0).nonzero()
        voxel = where[int(rng.integers(where.shape[0]))].tolist()
        shift = [centre - v for v in voxel]
        src = tuple(slice(max(0, -d), size - max(0, d)) for d in shift)
        dst = tuple(slice(max(0, d), size - max(0, -d)) for d in shift)
        before = (label[b] > 0).flatten(1).sum(1)
        for tensor, fill in ((image, float(image[b].min())), (label, 0.0)):
            part = tensor[b][(slice(None), *src)].clone()
            tensor[b].fill_(fill)
            tensor[b][(slice(None), *dst)] = part
        after = (label[b] > 0).flatten(1).sum(1)
        for other in range(label.shape[1]):  # a target mostly moved out: use the centred one
            if other != k and 2 * int(after[other]) < int(before[other]):
                label[b, other] = label[b, k]
        chosen[b] = k
    return image, label, chosen


__all__ = ["ClickLoop", "centre_on_first_click", "mask_only_iterations"]
