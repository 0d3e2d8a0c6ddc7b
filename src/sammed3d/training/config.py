"""Typed training configuration.

The dataclasses below are the schema; YAML files (``sammed3d/configs/train/*.yaml``) and
``key=value`` overrides only set values. Unknown keys and values of the wrong type are errors
that name the key. The defaults are the published SAM-Med3D regime (docs/faithfulness.md §8); every
field that deviates from it, or lets you deviate, says so in its comment and in
``docs/training.md``.

Example:
    >>> cfg = load_config("default", overrides=["data.roots=[/data/Dataset001]", "optim.lr=8e-5"])
    >>> cfg.optim.lr
    8e-05
    >>> save_config(cfg, "run/config.yaml")
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

logger = logging.getLogger(__name__)

AmpMode = Literal["auto", "none", "bf16", "fp16"]
Normalization = Literal["per_sample", "per_batch"]
Split = Literal["train", "test", "auto"]
Schedule = Literal["multistep", "cosine"]
LossResolution = Literal["full", "low"]
DeviceChoice = Literal["auto", "cpu", "cuda"]
TaskKind = Literal["interactive", "semantic"]

#: The packaged config that fine-tunes a registered model, where one exists.
FINETUNE_CONFIGS = {"sam_med3d_turbo": "finetune_turbo", "sam_med3d_demo": "finetune_default"}


def finetune_fit(architecture: str, config: str | None = None) -> str:
    """What makes a run fit an init checkpoint of ``architecture``, for messages:
    ``--config finetune_turbo`` where a packaged config fits it and is not ``config`` (the
    config the run already uses, so its ``model.name`` was overridden), else
    ``model.name=<architecture>``."""
    packaged = FINETUNE_CONFIGS.get(architecture)
    if packaged is not None and packaged != config:
        return f"--config {packaged}"
    return f"model.name={architecture}"


#: Names of the packaged configs (``sammed3d/configs/train/<name>.yaml``).
PACKAGED_CONFIGS = (
    "default",
    "finetune_turbo",
    "finetune_default",
    "tiny_cpu",
    "default_model",
    "semantic",
)


class ConfigError(ValueError):
    """A configuration value or key is invalid (one-line message naming the key)."""


@dataclass
class ModelSection:
    """Which network to train and where its initial weights come from."""

    #: Registry name (``sam_med3d``, ``sam_med3d_turbo``, ``sam_med3d_small``, ``sam_med3d_tiny``).
    name: str = "sam_med3d"
    #: Initial weights (published ``{"model_state_dict": ...}``, a bare state dict, or ours).
    #: A missing file or one whose architecture differs from ``name`` is an error; the published
    #: script silently trained from scratch instead.
    init_checkpoint: str | None = None
    #: Refuse to start without ``init_checkpoint`` (fine-tuning configs set this).
    require_init: bool = False
    #: Old Google-Drive checkpoints pickle Python objects; only for files you trust.
    allow_unsafe_pickle: bool = False
    #: Deviation (option): freeze the image encoder (fine-tune prompt encoder + decoder only;
    #: the encoder then runs without autograd, which saves most of the memory).
    freeze_image_encoder: bool = False
    #: Option (models with ``click_maps`` and a high-res path): give the network the
    #: similarity map to the negative clicks (``ModelConfig.negative_click_similarity``,
    #: recorded in the saved model). ``null`` keeps what the initial weights (or the
    #: registry config) have.
    negative_click_similarity: bool | None = None


@dataclass
class DataSection:
    """Datasets, the pre-processing cache and the crops fed to the model."""

    #: Dataset roots: nnU-Net/MSD folders (``dataset.json`` + ``imagesTr``/``labelsTr``) or a
    #: published per-class tree. Every (case, class) is one binary target.
    roots: list[str] = field(default_factory=list)
    #: Which split of each dataset to read (``auto``: the held-out split if labelled).
    split: Split = "train"
    #: Pre-processing cache (canonical RAS, resampled, CT-clamped arrays). Built once and reused
    #: across runs; default ``<output_dir>/cache``. Point several runs at one shared folder.
    cache_dir: str | None = None
    #: Target voxel spacing in mm (published: 1.5 mm isotropic, done offline).
    target_spacing: list[float] = field(default_factory=lambda: [1.5, 1.5, 1.5])
    #: Clamp range for CT images (modality from dataset metadata, not from the path);
    #: null disables. Published: [-1000, 1000].
    ct_clamp: list[float] | None = field(default_factory=lambda: [-1000.0, 1000.0])
    #: Targets with fewer foreground voxels (after resampling) are dropped when the cache is
    #: built, with the reason in the cache manifest. Published: a crop with <= 1000 voxels made
    #: the loader draw another random index instead (not reproducible).
    min_target_voxels: int = 1000
    #: Option: shift the crop centre by up to this many voxels per axis, uniformly at random.
    #: Published: 0 (the crop is always centred on the target's bounding box).
    random_shift: int = 0
    #: Probability of flipping each of the three axes (published: torchio RandomFlip, 0.5).
    flip_prob: float = 0.5
    #: Option (MONAI ``RandScaleIntensity`` / ``RandShiftIntensity`` on the normalised crop):
    #: probability of each, 0 = off (published: no intensity augmentation).
    intensity_aug_prob: float = 0.0
    #: ``per_sample``: z-score each crop over its voxels > 0 (as at inference, where the batch is
    #: one crop). ``per_batch``: the published training quirk, one mean/std over the voxels > 0
    #: of the whole micro-batch (depends on the batch composition, so DDP is not equivalent to
    #: one process with the same global batch).
    normalization: Normalization = "per_sample"
    #: DataLoader worker processes per rank.
    num_workers: int = 2
    #: Option (ours): crops drawn on the fly per epoch by the synthetic generator
    #: (``sammed3d.training.synthesis``; unlimited random label ensembles with random contrast).
    #: 0 = off. With ``roots`` too, both are mixed (epoch = all real targets + these).
    synthetic_per_epoch: int = 0
    #: Optional ``.npz`` of binary shapes (arrays) used as object templates by the generator.
    shape_bank: str | None = None
    #: Optional ``.npz`` of real anatomy (``image``, ``tissue`` label map at 1.5 mm) in which
    #: synthetic lesions are placed and whose tissue components become targets.
    anatomy: str | None = None
    #: Share of the synthetic crops taken from ``anatomy`` (lesions / tissue targets).
    anatomy_fraction: float = 0.0
    #: Share of the ``anatomy`` crops centred in one of its named structures (whole brain,
    #: white matter, lateral ventricles; the file's ``structures`` map) with that structure as
    #: the first target.
    anatomy_structure_fraction: float = 0.0
    #: Where those crops are centred (their first click): ``any`` voxel of the structure, or
    #: only where it is the ``innermost`` (smallest) structure, so that a click in the white
    #: matter always means the white matter and a click elsewhere in the brain the whole brain.
    anatomy_structure_clicks: str = "any"
    #: Generate synthetic crops on the training device (GPU) instead of in DataLoader workers.
    generate_on_device: bool = False
    #: Targets per synthetic crop; they share one image encoding (each gets its own clicks).
    targets_per_crop: int = 1


@dataclass
class OptimSection:
    """AdamW with a per-module learning rate and a per-epoch MultiStepLR (published)."""

    #: Learning rate of the image encoder (published: 8e-4 pre-training, 8e-5 fine-tuning).
    lr: float = 8e-4
    #: Prompt encoder and mask decoder train at ``lr * decoder_lr_scale`` (published: 0.1).
    decoder_lr_scale: float = 0.1
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    #: Epochs at which the learning rate is multiplied by ``gamma`` (published: 120, 180).
    milestones: list[int] = field(default_factory=lambda: [120, 180])
    gamma: float = 0.1
    #: Option: clip the global gradient norm (published: none).
    grad_clip: float | None = None
    #: Option: linear learning-rate warm-up over the first N optimizer steps (published: 0).
    warmup_steps: int = 0
    #: ``multistep`` (published): MultiStepLR stepped per epoch at ``milestones``. ``cosine``
    #: (option): cosine decay per optimizer step from the base rates to ``min_lr_ratio`` times
    #: them at the last step (``milestones``/``gamma`` unused).
    schedule: Schedule = "multistep"
    min_lr_ratio: float = 0.01
    #: Option: no weight decay on norms, biases, embeddings and position tables (published:
    #: weight decay on every parameter).
    no_decay_norms_embeddings: bool = False


@dataclass
class TrainSection:
    """The click-simulation loop, batching and precision."""

    #: Published: 200.
    epochs: int = 200
    #: Samples per process per micro-batch (published default 12; its scripts use 2 or 6).
    batch_size: int = 12
    #: Micro-batches per optimizer step (published 20). The global batch is
    #: ``batch_size * world_size * accumulation_steps``.
    accumulation_steps: int = 20
    #: Simulated interaction length per sample (published: 11).
    num_clicks: int = 11
    #: One mask-only iteration (no point prompt) drawn uniformly from this inclusive range of
    #: click indexes (0-based) per micro-batch; published ``randint(2, 9)`` = [2, 8]. null: none.
    mask_only_random: list[int] | None = field(default_factory=lambda: [2, 8])
    #: The last iteration is mask-only too (published).
    mask_only_last: bool = True
    #: Option: give all clicks so far at each iteration (published ``--multi_click``, off:
    #: only the newest click plus the previous low-res logits).
    accumulate_clicks: bool = False
    #: Next-click error region from ``upsampled_logits > click_threshold``. The published code
    #: thresholds the raw logits at 0.5 (sigmoid 0.62), not at 0.
    click_threshold: float = 0.5
    #: Option: cut the gradient between clicks (published: gradients flow through all 11).
    detach_mask_prompt: bool = False
    #: ``auto``: bf16 autocast on CUDA devices that support it, else fp16 with a GradScaler;
    #: fp32 on CPU. Published: fp16 autocast + GradScaler (CUDA only).
    amp: AmpMode = "auto"
    #: ``auto``: CUDA when available (the local rank's GPU under torchrun), else CPU.
    device: DeviceChoice = "auto"
    #: All randomness (shuffling, crops, flips, clicks) derives from (seed, epoch, sample), so a
    #: resumed run continues exactly. Published: 2023.
    seed: int = 2023
    #: Option: ``low`` computes the loss on the model's own logit grid against the
    #: area-averaged target and draws corrective clicks on that grid (published ``full``: loss
    #: on the logits upsampled to the crop). The first click is a uniform target voxel either way.
    loss_resolution: LossResolution = "full"
    #: Option: loss weight of the first click (published: 1, all clicks equal).
    first_click_weight: float = 1.0
    #: Option (``loss_resolution=low``): share of corrective clicks placed at the centre of the
    #: largest error (RITM rule) instead of uniformly in the error region (published: 0).
    center_click_fraction: float = 0.0
    #: Option (ours; published: mask 0 at every click): at the first click decode the
    #: multimask outputs, back-propagate the one closest to the target and train the IoU head
    #: to rank them (SAM's answer to an ambiguous click). The saved model records
    #: ``first_click_multimask: true``, so inference keeps the mask ranked first. Starting
    #: from weights whose outputs 1..3 were never trained, they are seeded from mask 0.
    first_click_multimask: bool = False
    #: Weight of the IoU head's mean squared error (``first_click_multimask`` only).
    iou_loss_weight: float = 1.0
    #: Option (ours; published: 0): share of the crops shifted so that a uniform voxel of
    #: one of their targets lies at the crop centre, where its first click is then placed. At
    #: inference the ROI is always centred on the first click; without this a model sees that
    #: case only by chance and learns a position prior instead.
    centre_first_click: float = 0.0
    #: Option (ours, ``loss_resolution=low``; published: 0): share of the targets whose second
    #: click gets an over-segmented mask prompt (the target plus an attached leak,
    #: :mod:`sammed3d.training.leaks`) instead of the model's first mask, so that a negative
    #: click after one positive click is also trained on large targets.
    leak_prompt_fraction: float = 0.0
    #: With ``leak_prompt_fraction``: the leaked prompt comes at one later click drawn
    #: uniformly (2nd to last) instead of always at the second.
    leak_prompt_any_click: bool = False
    #: With ``leak_prompt_fraction``: the largest leak volume relative to the target's (drawn
    #: log-uniformly from 0.05); above 1 the mask prompt is far too large for the target.
    leak_prompt_max_fraction: float = 0.8
    #: Option (ours, ``first_click_multimask`` and ``loss_resolution=low``; published: 0):
    #: share of the targets whose second click refines the first-click output closest to the
    #: target (highest IoU) instead of the one the IoU head ranks first: a person who took
    #: another extent (``InteractiveSession.choose_extent``) and clicks on from there.
    choose_extent_fraction: float = 0.0
    #: Option (ours, ``loss_resolution=low``; published: 0): weight of a hinge on each later
    #: click's soft Dice falling below the previous click's (``losses.dice_fall_penalty``):
    #: more gradient exactly where a click made the mask worse.
    dice_fall_weight: float = 0.0
    #: Option: DDP ``find_unused_parameters``. Off: parameters that the regime never trains
    #: (IoU head, ``no_mask_embed``) are frozen instead, which AdamW treats identically.
    find_unused_parameters: bool = False


@dataclass
class RunSection:
    """Output folder, checkpoints and logging."""

    #: Run folder: config.yaml, checkpoints/, tensorboard/, log.jsonl, summary.json.
    output_dir: str = "runs/sammed3d"
    #: Checkpoint every N optimizer steps (and always at the end).
    save_every_steps: int = 500
    #: Also checkpoint at the end of every epoch.
    save_every_epoch: bool = True
    #: Keep only the newest N step checkpoints (``final.pth`` is always kept).
    keep_last: int = 3
    #: Log scalars every N optimizer steps.
    log_every_steps: int = 10
    tensorboard: bool = True
    #: Stop (with a checkpoint) after this many optimizer steps in this invocation; for
    #: time-limited jobs and tests. The run resumes with ``--resume``.
    stop_after_steps: int | None = None
    #: Also checkpoint whenever this many minutes passed since the last checkpoint.
    save_every_minutes: float | None = None
    #: Stop (with a checkpoint) after this many minutes of training in this invocation.
    stop_after_minutes: float | None = None


@dataclass
class TaskSection:
    """What is trained: the promptable model (``interactive``, the published regime) or a
    task-specific multi-class model on the SAM-Med3D image encoder (``semantic``; ours,
    ``docs/transfer.md``).

    For ``semantic``, ``model.name`` is the encoder architecture, ``model.init_checkpoint`` the
    SAM-Med3D checkpoint whose ``image_encoder`` initialises it (null: from scratch) and
    ``model.freeze_image_encoder`` freezes it. ``optim.lr`` is the decoder's learning rate
    (``optim.decoder_lr_scale`` and the ``train`` click settings are not used).
    """

    #: ``interactive``: the click-simulation regime. ``semantic``: dense multi-class output.
    kind: TaskKind = "interactive"
    #: semantic: class names (as in ``dataset.json``) learnt as output labels 1..N in this
    #: order; empty = every class the datasets declare (all roots must declare the same names).
    #: Declared classes left out here are background.
    classes: list[str] = field(default_factory=list)
    #: semantic: layer-wise learning-rate decay (BEiT/MAE fine-tuning): encoder block ``i``
    #: (0-based) of ``L`` trains at ``lr * layer_decay ** (L + 1 - i)``, the patch/position
    #: embedding at ``lr * layer_decay ** (L + 2)``, the neck at ``lr * layer_decay``, the
    #: decoder at ``lr``. 1 = no decay.
    layer_decay: float = 1.0
    #: semantic: UNETR ``feature_size`` (channels of the full-resolution decoder stage).
    decoder_features: int = 16
    #: semantic: share of crops centred on a voxel of a class drawn uniformly from the classes
    #: (class-balanced); the others are centred uniformly in a random case.
    foreground_fraction: float = 0.5
    #: semantic: crops per epoch; 0 = cases x classes.
    samples_per_epoch: int = 0
    #: semantic: overlap of the sliding windows at inference (stored in the checkpoint).
    sw_overlap: float = 0.5


@dataclass
class TrainingConfig:
    """The whole training configuration (sections ``model``, ``data``, ``optim``, ``train``,
    ``run``, ``task``)."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    run: RunSection = field(default_factory=RunSection)
    task: TaskSection = field(default_factory=TaskSection)

    def __post_init__(self) -> None:
        validate_config(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON/``weights_only``-safe)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingConfig:
        """Build from a nested dict; unknown keys and wrong types raise :class:`ConfigError`."""
        return _build_dataclass(cls, data, prefix="")


# --------------------------------------------------------------------------------------------
# Validation


def validate_config(cfg: TrainingConfig) -> None:
    """Cross-field checks; raises :class:`ConfigError` naming the key."""
    t, o, d, r = cfg.train, cfg.optim, cfg.data, cfg.run
    for key, value in (
        ("train.epochs", t.epochs),
        ("train.batch_size", t.batch_size),
        ("train.accumulation_steps", t.accumulation_steps),
        ("train.num_clicks", t.num_clicks),
        ("run.save_every_steps", r.save_every_steps),
        ("run.keep_last", r.keep_last),
        ("run.log_every_steps", r.log_every_steps),
    ):
        if value < 1:
            raise ConfigError(f"{key} must be >= 1, got {value}")
    if t.mask_only_random is not None:
        if len(t.mask_only_random) != 2:
            raise ConfigError(
                f"train.mask_only_random must be [low, high] or null, got {t.mask_only_random}"
            )
        low, high = t.mask_only_random
        if not 1 <= low <= high <= t.num_clicks - 1:
            raise ConfigError(
                f"train.mask_only_random={t.mask_only_random} must satisfy 1 <= low <= high <= "
                f"num_clicks - 1 = {t.num_clicks - 1} (click 0 always has a point)"
            )
    if t.mask_only_last and t.num_clicks < 2:
        raise ConfigError("train.mask_only_last needs train.num_clicks >= 2 (click 0 has a point)")
    if o.lr <= 0 or o.decoder_lr_scale < 0 or o.weight_decay < 0:
        raise ConfigError(
            f"optim.lr must be > 0 and decoder_lr_scale, weight_decay >= 0, got lr={o.lr}, "
            f"decoder_lr_scale={o.decoder_lr_scale}, weight_decay={o.weight_decay}"
        )
    if len(o.betas) != 2 or not all(0.0 <= b < 1.0 for b in o.betas):
        raise ConfigError(f"optim.betas must be two values in [0, 1), got {o.betas}")
    if list(o.milestones) != sorted(o.milestones) or any(m < 1 for m in o.milestones):
        raise ConfigError(f"optim.milestones must be increasing epochs >= 1, got {o.milestones}")
    if o.warmup_steps < 0:
        raise ConfigError(f"optim.warmup_steps must be >= 0, got {o.warmup_steps}")
    if o.grad_clip is not None and o.grad_clip <= 0:
        raise ConfigError(f"optim.grad_clip must be > 0 or null, got {o.grad_clip}")
    if len(d.target_spacing) != 3 or any(s <= 0 for s in d.target_spacing):
        raise ConfigError(f"data.target_spacing must be 3 positive values, got {d.target_spacing}")
    if d.ct_clamp is not None and (len(d.ct_clamp) != 2 or d.ct_clamp[0] >= d.ct_clamp[1]):
        raise ConfigError(f"data.ct_clamp must be [low, high] with low < high, got {d.ct_clamp}")
    if not 0.0 <= d.flip_prob <= 1.0 or not 0.0 <= d.intensity_aug_prob <= 1.0:
        raise ConfigError(
            f"data.flip_prob and data.intensity_aug_prob must be in [0, 1], got "
            f"{d.flip_prob} and {d.intensity_aug_prob}"
        )
    if d.random_shift < 0 or d.min_target_voxels < 0 or d.num_workers < 0:
        raise ConfigError(
            "data.random_shift, data.min_target_voxels and data.num_workers must be >= 0"
        )
    if d.targets_per_crop < 1:
        raise ConfigError(f"data.targets_per_crop must be >= 1, got {d.targets_per_crop}")
    if d.targets_per_crop > 1 and d.roots:
        raise ConfigError(
            "data.targets_per_crop > 1 works with synthetic data only (data.roots must be empty)"
        )
    if d.synthetic_per_epoch < 0:
        raise ConfigError(f"data.synthetic_per_epoch must be >= 0, got {d.synthetic_per_epoch}")
    if not 0.0 <= d.anatomy_fraction <= 1.0:
        raise ConfigError(f"data.anatomy_fraction must be in [0, 1], got {d.anatomy_fraction}")
    if d.anatomy_fraction > 0 and not d.anatomy:
        raise ConfigError("data.anatomy_fraction > 0 needs data.anatomy (an .npz file)")
    if not 0.0 <= d.anatomy_structure_fraction <= 1.0:
        raise ConfigError(
            f"data.anatomy_structure_fraction must be in [0, 1], got {d.anatomy_structure_fraction}"
        )
    if d.anatomy_structure_fraction > 0 and d.anatomy_fraction == 0:
        raise ConfigError("data.anatomy_structure_fraction > 0 needs data.anatomy_fraction > 0")
    if d.anatomy_structure_clicks not in ("any", "innermost"):
        raise ConfigError(
            "data.anatomy_structure_clicks must be 'any' or 'innermost', got "
            f"{d.anatomy_structure_clicks!r}"
        )
    if not 0.0 < o.min_lr_ratio <= 1.0:
        raise ConfigError(f"optim.min_lr_ratio must be in (0, 1], got {o.min_lr_ratio}")
    if not 0.0 <= t.centre_first_click <= 1.0:
        raise ConfigError(f"train.centre_first_click must be in [0, 1], got {t.centre_first_click}")
    if not 0.0 <= t.leak_prompt_fraction <= 1.0:
        raise ConfigError(
            f"train.leak_prompt_fraction must be in [0, 1], got {t.leak_prompt_fraction}"
        )
    if not t.leak_prompt_max_fraction >= 0.05:
        raise ConfigError(
            f"train.leak_prompt_max_fraction must be >= 0.05, got {t.leak_prompt_max_fraction}"
        )
    if t.leak_prompt_fraction > 0 and t.loss_resolution != "low":
        raise ConfigError("train.leak_prompt_fraction > 0 needs train.loss_resolution=low")
    if not 0.0 <= t.choose_extent_fraction <= 1.0:
        raise ConfigError(
            f"train.choose_extent_fraction must be in [0, 1], got {t.choose_extent_fraction}"
        )
    if t.choose_extent_fraction > 0 and (t.loss_resolution != "low" or not t.first_click_multimask):
        raise ConfigError(
            "train.choose_extent_fraction > 0 needs train.loss_resolution=low and "
            "train.first_click_multimask=true"
        )
    if not (math.isfinite(t.dice_fall_weight) and t.dice_fall_weight >= 0):
        raise ConfigError(
            f"train.dice_fall_weight must be a finite number >= 0, got {t.dice_fall_weight}"
        )
    if t.dice_fall_weight > 0 and t.loss_resolution != "low":
        raise ConfigError("train.dice_fall_weight > 0 needs train.loss_resolution=low")
    if t.iou_loss_weight < 0:
        raise ConfigError(f"train.iou_loss_weight must be >= 0, got {t.iou_loss_weight}")
    if t.first_click_weight <= 0 or not 0.0 <= t.center_click_fraction <= 1.0:
        raise ConfigError(
            "train.first_click_weight must be > 0 and train.center_click_fraction in [0, 1], "
            f"got {t.first_click_weight} and {t.center_click_fraction}"
        )
    for key, value in (
        ("run.save_every_minutes", r.save_every_minutes),
        ("run.stop_after_minutes", r.stop_after_minutes),
    ):
        if value is not None and not value > 0:
            raise ConfigError(f"{key} must be > 0 or null, got {value}")
    if r.stop_after_steps is not None and r.stop_after_steps < 1:
        raise ConfigError(f"run.stop_after_steps must be >= 1 or null, got {r.stop_after_steps}")
    _validate_task(cfg)


def _validate_task(cfg: TrainingConfig) -> None:
    """Checks of the ``task`` section (semantic training: ``docs/transfer.md``)."""
    k, d = cfg.task, cfg.data
    if not 0.0 < k.layer_decay <= 1.0:
        raise ConfigError(f"task.layer_decay must be in (0, 1], got {k.layer_decay}")
    if k.decoder_features < 2 or k.decoder_features % 2:
        raise ConfigError(
            f"task.decoder_features must be an even number >= 2, got {k.decoder_features}"
        )
    if not 0.0 <= k.foreground_fraction <= 1.0:
        raise ConfigError(
            f"task.foreground_fraction must be in [0, 1], got {k.foreground_fraction}"
        )
    if k.samples_per_epoch < 0:
        raise ConfigError(f"task.samples_per_epoch must be >= 0, got {k.samples_per_epoch}")
    if not 0.0 <= k.sw_overlap < 1.0:
        raise ConfigError(f"task.sw_overlap must be in [0, 1), got {k.sw_overlap}")
    dupes = sorted({c for c in k.classes if k.classes.count(c) > 1})
    if dupes or any(not c.strip() for c in k.classes):
        raise ConfigError(f"task.classes must be distinct non-empty names, got {k.classes}")
    if k.kind != "semantic":
        return
    if d.synthetic_per_epoch > 0 or d.targets_per_crop > 1:
        raise ConfigError(
            "task.kind=semantic trains on labelled datasets (data.roots) only: set "
            "data.synthetic_per_epoch=0 and data.targets_per_crop=1"
        )
    if d.normalization != "per_sample":
        raise ConfigError(
            "task.kind=semantic z-scores each case (data.normalization must be per_sample; "
            "per_batch is a quirk of the published click training)"
        )


# --------------------------------------------------------------------------------------------
# Typed construction from plain data


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp`` (no silent string parsing)."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{key} must not be null (expected {_type_name(tp)})")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(
            errors[0] if len(errors) == 1 else f"{key}: {value!r} fits no type of {_type_name(tp)}"
        )
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key} must be one of {list(choices)}, got {value!r}")
        return value
    if origin in (list, tuple, Sequence):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {type(value).__name__} {value!r}")
        (item_tp, *_rest) = get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {type(value).__name__} {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, prefix=f"{key}.")
    raise ConfigError(f"{key}: unsupported config type {_type_name(tp)}")  # pragma: no cover


def _build_dataclass(cls: Any, data: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "config"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        names = [f"{prefix}{k}" for k in unknown]
        raise ConfigError(f"unknown config key(s) {names}; valid keys in {where}: {sorted(fields)}")
    kwargs = {name: _coerce(value, hints[name], f"{prefix}{name}") for name, value in data.items()}
    return cls(**kwargs)


# --------------------------------------------------------------------------------------------
# Files and overrides


def packaged_config_path(name: str) -> Path:
    """Path of a packaged config (``default``, ``finetune_turbo``, ``tiny_cpu``)."""
    ref = resources.files("sammed3d") / "configs" / "train" / f"{name}.yaml"
    return Path(str(ref))


def _read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    text_path = Path(path)
    if not text_path.exists():
        if os.fspath(path) in PACKAGED_CONFIGS:
            text_path = packaged_config_path(os.fspath(path))
        else:
            raise FileNotFoundError(
                f"config file not found: {path} (packaged configs: {list(PACKAGED_CONFIGS)})"
            )
    if text_path.is_dir():
        raise ConfigError(f"config path is a directory, expected a YAML file: {text_path}")
    try:
        data = yaml.safe_load(text_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"{text_path} is not valid YAML: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{text_path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=8e-5"`` -> (``["optim", "lr"]``, ``8e-05``); values are parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"override key {key!r} must be section.key (e.g. optim.lr)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set ``section.key=value`` entries in a nested dict (returns a new dict)."""
    out = _deepcopy_dict(data)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def _deepcopy_dict(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deepcopy_dict(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def _fix_yaml_floats(data: Any) -> Any:
    """YAML 1.1 (PyYAML) reads ``8e-5`` (no dot) as a string; accept it where a number is due."""
    if isinstance(data, dict):
        return {k: _fix_yaml_floats(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_fix_yaml_floats(v) for v in data]
    if isinstance(data, str):
        try:
            if "e" in data.lower() and data.strip().lower() not in ("inf", "nan"):
                return float(data)
        except ValueError:
            return data
    return data


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
) -> TrainingConfig:
    """Load a training config.

    Args:
        path: A YAML file, a packaged config name (``default``, ``finetune_turbo``,
            ``tiny_cpu``), or None for the dataclass defaults (the published regime).
        overrides: ``section.key=value`` strings applied after the file; values are YAML
            (``data.roots=[/a,/b]``, ``optim.grad_clip=null``).

    Returns:
        The validated :class:`TrainingConfig`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ConfigError: unknown keys, wrong types or invalid combinations (names the key).
    """
    data: dict[str, Any] = {} if path is None else _read_yaml(path)
    data = apply_overrides(data, overrides)
    return TrainingConfig.from_dict(_fix_yaml_floats_where_numeric(data))


def _fix_yaml_floats_where_numeric(data: dict[str, Any]) -> dict[str, Any]:
    """Apply :func:`_fix_yaml_floats` only to fields annotated as numbers."""
    out = _deepcopy_dict(data)
    hints = get_type_hints(TrainingConfig)
    for section, values in out.items():
        section_tp = hints.get(section)
        if not (dataclasses.is_dataclass(section_tp) and isinstance(values, dict)):
            continue
        field_hints = get_type_hints(section_tp)
        for key, value in values.items():
            tp = field_hints.get(key)
            if tp is not None and _is_numeric_type(tp):
                values[key] = _fix_yaml_floats(value)
    return out


def _is_numeric_type(tp: Any) -> bool:
    if tp in (float, int):
        return True
    args = get_args(tp)
    return bool(args) and any(_is_numeric_type(a) for a in args if a is not type(None))


def config_to_yaml(cfg: TrainingConfig) -> str:
    """The resolved config as YAML text (sections in schema order)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)


def save_config(cfg: TrainingConfig, path: str | os.PathLike[str]) -> Path:
    """Write the resolved config atomically as YAML."""
    from sammed3d.io import atomic_write_text  # mode from the umask, like every output

    return atomic_write_text(path, config_to_yaml(cfg))


def diff_configs(old: TrainingConfig, new: TrainingConfig) -> list[str]:
    """``section.key: old -> new`` for every value that differs."""
    out = []
    a, b = old.to_dict(), new.to_dict()
    for section in a:
        for key in a[section]:
            if a[section][key] != b[section][key]:
                out.append(f"{section}.{key}: {a[section][key]!r} -> {b[section][key]!r}")
    return out


__all__ = [
    "PACKAGED_CONFIGS",
    "AmpMode",
    "ConfigError",
    "DataSection",
    "ModelSection",
    "Normalization",
    "OptimSection",
    "RunSection",
    "TaskSection",
    "TrainSection",
    "TrainingConfig",
    "apply_overrides",
    "config_to_yaml",
    "diff_configs",
    "load_config",
    "packaged_config_path",
    "parse_override",
    "save_config",
    "validate_config",
]
