"""The semantic training step (``task.kind=semantic``): task model, loss, parameter groups.

The trainer (``sammed3d.training.trainer``) runs this instead of the click loop; everything
else (config, DDP, AMP, exact resume, checkpoints, TensorBoard, SIGTERM) is shared.

* :func:`build_task_model`: the encoder of ``model.name``, initialised from the
  ``image_encoder`` of ``model.init_checkpoint`` (loaded strictly; null: from scratch), and a
  fresh UNETR decoder; or the model of a checkpoint being resumed.
* :class:`SemanticStep`: one forward pass with the DiceCE loss of MONAI's UNETR/Swin-UNETR
  recipes (``DiceCELoss(softmax, one-hot target)``: soft Dice over all channels, background
  included, per sample, plus cross-entropy; 1:1), over the voxels of the image only: crop
  voxels beyond the image (label :data:`~sammed3d.training.semantic_data.IGNORE_LABEL`) count
  neither in the loss nor in the logged Dice (:func:`dice_ce_loss`, :func:`crop_dice`), as
  inference drops them.
* :func:`semantic_param_groups`: AdamW groups with layer-wise learning-rate decay.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from sammed3d.task.model import TaskModel, TaskSpec
from sammed3d.training.config import ConfigError, TrainingConfig
from sammed3d.training.interaction import autocast_context
from sammed3d.training.semantic_data import IGNORE_LABEL, PADDING

logger = logging.getLogger(__name__)


def task_spec(cfg: TrainingConfig, classes: Sequence[str], modality: str) -> TaskSpec:
    """The :class:`TaskSpec` a config describes (origin: scratch until set)."""
    from sammed3d.build import get_config

    d, k = cfg.data, cfg.task
    return TaskSpec(
        encoder=get_config(cfg.model.name),
        encoder_name=cfg.model.name,
        classes=tuple(classes),
        decoder_features=k.decoder_features,
        spacing=(d.target_spacing[0], d.target_spacing[1], d.target_spacing[2]),
        ct_clamp=None if d.ct_clamp is None else (d.ct_clamp[0], d.ct_clamp[1]),
        modality=modality,
        sw_overlap=k.sw_overlap,
        padding=PADDING,
    )


def build_task_model(
    cfg: TrainingConfig,
    resume: tuple[Any, dict[str, Any]] | None = None,
) -> TaskModel:
    """The task model of a run: resumed from a training checkpoint, or built from the config.

    Args:
        cfg: The run's config (``task.kind=semantic``).
        resume: ``(path, checkpoint dict)`` of the checkpoint being resumed, or None.

    Raises:
        ConfigError: ``model.require_init`` without ``model.init_checkpoint``.
        CheckpointError: an init checkpoint that is not a SAM-Med3D model or whose encoder has
            another architecture; a resume checkpoint that is not a task checkpoint of this
            architecture / these classes.
        FileNotFoundError / ValueError: from dataset discovery (classes come from there).
    """
    import dataclasses

    from sammed3d.build import CheckpointError, _load_state_dict_strict
    from sammed3d.training.semantic_data import resolve_task_data

    data = resolve_task_data(cfg)
    spec = task_spec(cfg, data.classes, data.modality)
    if resume is not None:
        path, obj = resume
        try:
            saved = TaskSpec.from_dict(dict(obj["task"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{path} is not a task-model training checkpoint: {exc}"
            ) from None
        if saved.classes != spec.classes or saved.encoder != spec.encoder:
            raise CheckpointError(
                f"{path} was trained for classes {list(saved.classes)} on "
                f"{saved.encoder_name or 'another encoder'}; the config now gives classes "
                f"{list(spec.classes)} on {spec.encoder_name}"
            )
        model = TaskModel(saved)
        _load_state_dict_strict(model, obj["model_state_dict"], str(path))
        return model
    m, k = cfg.model, cfg.task
    origin: dict[str, Any] = {"init": "scratch"}
    state = None
    if m.init_checkpoint:
        from sammed3d.task.checkpoint import encoder_state_from_checkpoint

        try:
            state, origin = encoder_state_from_checkpoint(
                m.init_checkpoint, spec.encoder, allow_unsafe_pickle=m.allow_unsafe_pickle
            )
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"init {exc}") from None
    elif m.require_init:
        raise ConfigError(
            "this config fine-tunes a pre-trained encoder: set model.init_checkpoint "
            "(CLI: --init CKPT); refusing to train from scratch"
        )
    origin.update(frozen=m.freeze_image_encoder, layer_decay=k.layer_decay)
    spec = dataclasses.replace(spec, encoder_origin=origin)
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    model = TaskModel(spec)
    if state is not None:
        model.image_encoder.load_state_dict(state, strict=True)
        logger.info("encoder initialised from %s (sha256 %s)", origin["file"], origin["sha256"])
    else:
        logger.info("training %s from scratch (random encoder)", m.name)
        if m.freeze_image_encoder:
            logger.warning("model.freeze_image_encoder without init: the encoder stays random")
    return model


def freeze_task_model(model: TaskModel, freeze_encoder: bool) -> None:
    """Freeze the encoder (no gradients, run without autograd) or make everything trainable."""
    model.freeze_encoder = bool(freeze_encoder)
    for p in model.image_encoder.parameters():
        p.requires_grad_(not freeze_encoder)


def encoder_layer_depths(model: TaskModel) -> dict[str, int]:
    """Exponent of ``task.layer_decay`` per encoder parameter (``docs/transfer.md``).

    Patch and position embedding: ``L + 2``; block ``i``: ``L + 1 - i``; neck: 1
    (``L`` = number of blocks). Decoder parameters are not listed (exponent 0).
    """
    depth = len(model.image_encoder.blocks)
    out: dict[str, int] = {}
    for name, _ in model.image_encoder.named_parameters():
        if name.startswith("blocks."):
            out[name] = depth + 1 - int(name.split(".")[1])
        elif name.startswith("neck."):
            out[name] = 1
        else:  # patch_embed.*, pos_embed
            out[name] = depth + 2
    return out


def semantic_param_groups(model: TaskModel, cfg: TrainingConfig) -> list[dict[str, Any]]:
    """AdamW parameter groups: one per decay exponent (and no-decay split if configured).

    Each group carries ``name`` and ``lr_exponent``; its rate is
    ``optim.lr * task.layer_decay ** lr_exponent``.
    """
    from sammed3d.training.optim import no_decay_names

    o = cfg.optim
    skip = no_decay_names(model) if o.no_decay_norms_embeddings else set()
    depths = {f"image_encoder.{n}": e for n, e in encoder_layer_depths(model).items()}
    buckets: dict[tuple[int, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = (depths.get(name, 0), name in skip)
        buckets.setdefault(key, []).append(p)
    groups: list[dict[str, Any]] = []
    for (exponent, plain), params in sorted(buckets.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        name = "decoder" if exponent == 0 else f"encoder_decay{exponent}"
        group: dict[str, Any] = {
            "params": params,
            "lr": semantic_base_lr(cfg, {"lr_exponent": exponent}),
            "name": f"{name}.no_decay" if plain else name,
            "lr_exponent": exponent,
        }
        if plain:
            group["weight_decay"] = 0.0
        groups.append(group)
    return groups


def semantic_base_lr(cfg: TrainingConfig, group: dict[str, Any]) -> float:
    """The base learning rate of a group made by :func:`semantic_param_groups`."""
    return cfg.optim.lr * cfg.task.layer_decay ** int(group["lr_exponent"])


#: Smoothing terms of the soft Dice (MONAI ``DiceLoss`` defaults).
SMOOTH_NR = SMOOTH_DR = 1e-5


def dice_ce_loss(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """MONAI's ``DiceCELoss(to_onehot_y=True, softmax=True)`` over the labelled voxels only
    (MONAI's ``MaskedDiceLoss`` plus the cross-entropy of the labelled voxels).

    Soft Dice per sample and channel (background included), averaged, plus the cross-entropy
    averaged per sample, then over samples (so a batch of 2 equals 2 ranks of 1). Voxels
    labelled :data:`IGNORE_LABEL` (crop padding) are left out of both; without such voxels
    this is exactly MONAI's value.

    Args:
        logits: ``(B, N + 1, ...)`` network output (float).
        label: ``(B, 1, ...)`` integers in 0..N or :data:`IGNORE_LABEL`.
    """
    import torch.nn.functional as F
    from monai.losses import MaskedDiceLoss

    valid = (label[:, 0] != IGNORE_LABEL).to(logits.dtype)  # (B, ...)
    target = label[:, 0].clamp(min=0)
    spatial = tuple(range(1, valid.ndim))
    # softmax first, then the padding masked out of prediction and one-hot target alike (the
    # target one-hot before masking: a masked label would be background, not nothing)
    onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).to(logits.dtype)
    dice = MaskedDiceLoss(softmax=True, smooth_nr=SMOOTH_NR, smooth_dr=SMOOTH_DR)(
        logits, onehot, mask=valid.unsqueeze(1)
    )
    ce = F.cross_entropy(logits, target, reduction="none")  # (B, ...)
    ce_mean = (ce * valid).sum(dim=spatial) / valid.sum(dim=spatial).clamp(min=1.0)
    return dice + ce_mean.mean()


def crop_dice(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Hard Dice per foreground class over the labelled voxels of crops, all crops pooled.

    The score ``sammed3d predict --data`` gives a whole case, restricted to what the crops
    show: voxels labelled :data:`IGNORE_LABEL` (beyond the image) are left out, as inference
    drops the padding. 1 when a class is in neither prediction nor ground truth.

    Args:
        pred: ``(B, ...)`` predicted labels.
        label: ``(B, ...)`` ground truth in 0..N or :data:`IGNORE_LABEL`.
        num_classes: N.

    Returns:
        ``(N,)`` float.
    """
    valid = label != IGNORE_LABEL
    classes = torch.arange(1, num_classes + 1, device=pred.device).view(-1, *[1] * pred.ndim)
    p = (pred.unsqueeze(0) == classes) & valid  # (N, B, ...)
    g = label.unsqueeze(0) == classes
    inter = (p & g).flatten(1).sum(1).float()
    total = (p.flatten(1).sum(1) + g.flatten(1).sum(1)).float()
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))


class SemanticStep(nn.Module):
    """One training forward pass of a task model (an ``nn.Module`` so DDP can wrap it).

    Args:
        model: The task model (its parameters are this module's parameters).
        autocast_dtype: ``torch.bfloat16`` / ``torch.float16`` for mixed precision, or None.

    Called like the click loop, ``step(image, label, seeds, mask_only)`` (``seeds`` and
    ``mask_only`` are unused), it returns ``loss`` (scalar DiceCE over the image's voxels,
    :func:`dice_ce_loss`), ``dice`` (``(N,)`` detached hard Dice per foreground class over the
    micro-batch's crops, padding left out, :func:`crop_dice`) and ``class_crops`` (``(N,)``
    float: how many crops of the micro-batch contain each class; the trainer warns about a
    class that no crop of a run contained, :func:`absent_class_message`).
    """

    def __init__(self, model: TaskModel, *, autocast_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.model = model
        self.autocast_dtype = autocast_dtype

    def forward(
        self,
        image: torch.Tensor,
        label: torch.Tensor,
        seeds: torch.Tensor | None = None,
        mask_only: Sequence[int] = (),
    ) -> dict[str, torch.Tensor]:
        """``image`` ``(B, 1, S, S, S)``, ``label`` ``(B, 1, S, S, S)`` integers in 0..N, or
        :data:`IGNORE_LABEL` beyond the image.

        Raises:
            ValueError: shapes that do not match, or other label values.
        """
        n = self.model.spec.num_classes
        if label.shape != (image.shape[0], 1, *image.shape[2:]):
            raise ValueError(
                f"label must be (B, 1, S, S, S) like the image {tuple(image.shape)}, got "
                f"{tuple(label.shape)}"
            )
        label = label.long()
        low, high = int(label.min()), int(label.max())
        if high > n or (low < 0 and low != IGNORE_LABEL):
            bad = high if high > n else low
            raise ValueError(
                f"label values must be in 0..{n} ({IGNORE_LABEL} beyond the image), got {bad}"
            )
        with autocast_context(image.device, self.autocast_dtype):
            logits = self.model(image)
        logits = logits.float()
        loss = dice_ce_loss(logits, label)
        with torch.no_grad():
            gt = label[:, 0]
            dice = crop_dice(logits.argmax(1), gt, n)
            classes = torch.arange(1, n + 1, device=gt.device).view(-1, 1, 1, 1, 1)
            class_crops = (gt.unsqueeze(0) == classes).flatten(2).any(2).sum(1).float()
        return {"loss": loss, "dice": dice, "class_crops": class_crops}


def absent_class_message(
    classes: Sequence[str], class_crops: Sequence[float], crops: int, foreground_fraction: float
) -> str | None:
    """One line naming the classes that no training crop of a run contained, or None.

    Such a class got no positive example (its output channel only learnt "not here"), which
    happens with ``task.foreground_fraction=0`` (uniform crops) and a small structure, or a run
    of very few steps.

    Args:
        classes: Class names (label ``i + 1`` = ``classes[i]``).
        class_crops: Crops that contained each class, summed over the run (all ranks).
        crops: Crops the run trained on (all ranks); 0 gives None.
        foreground_fraction: ``task.foreground_fraction`` of the run (for the advice).
    """
    absent = [c for c, n in zip(classes, class_crops, strict=True) if n <= 0]
    if not absent or crops <= 0:
        return None
    which = f"class {absent[0]!r} was" if len(absent) == 1 else f"classes {absent} were"
    return (
        f"{which} in none of the {crops} training crops of this run "
        f"(task.foreground_fraction={foreground_fraction:g}): the model saw no example of it; "
        "raise task.foreground_fraction (class-balanced crops) or train longer"
    )


__all__ = [
    "SemanticStep",
    "absent_class_message",
    "build_task_model",
    "crop_dice",
    "dice_ce_loss",
    "encoder_layer_depths",
    "freeze_task_model",
    "semantic_base_lr",
    "semantic_param_groups",
    "task_spec",
]
