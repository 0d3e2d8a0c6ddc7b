"""Training data: the pre-processing cache, the crop dataset, the resumable sampler, and the
dataset a run trains on (:func:`build_dataset`: cached targets, generated crops, task data).

Pipeline (docs/faithfulness.md §8 and §9):

1. **Targets**: every (case, class) of nnU-Net/MSD datasets or of the published per-class layout
   (``sammed3d.data.layout``) is one binary target.
2. **Cache** (built once, reused by later runs): each image is resampled to ``target_spacing``
   (linear), brought to canonical RAS orientation and, for CT (modality from the dataset's
   metadata, not the path), clamped to ``ct_clamp``; its label map is resampled with nearest
   neighbour onto the same grid. Arrays are stored as ``.npy`` (memory-mapped when read). Per
   target the voxel count and the bounding-box centre are stored; targets smaller than
   ``min_target_voxels`` are dropped, and ``manifest.jsonl`` records every keep/drop decision.
3. **Samples**: a crop of the model's input size centred on the target's bounding-box centre
   (optionally shifted at random), zero-padded outside the volume, binarised for the class,
   randomly flipped per axis (MONAI ``RandFlipd``), z-scored over its voxels > 0 (per sample),
   optionally intensity-augmented (MONAI ``RandScaleIntensity``/``RandShiftIntensity``).

Randomness: the sampler yields ``(epoch, index)`` keys and every random choice of a sample
(shift, flips, intensity, the seed of its click draws) comes from a generator seeded with
``(seed, epoch, index)``. A sample is therefore identical whatever rank, worker or batch it lands
in, and a resumed run sees exactly the samples it would have seen.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, DistributedSampler
from tqdm import tqdm

from sammed3d.data.layout import undeclared_values
from sammed3d.io import atomic_write_text
from sammed3d.training.config import ConfigError

if TYPE_CHECKING:
    from sammed3d.training.config import TrainingConfig
    from sammed3d.training.distributed import DistContext

logger = logging.getLogger(__name__)

#: Bump when the cached arrays change meaning.
CACHE_VERSION = 1

SampleKey = tuple[int, int]  # (epoch, index)


# --------------------------------------------------------------------------------------------
# Randomness and sampling


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one sample's random choices, a pure function of its key."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index)])


def step_rng(seed: int, epoch: int, step: int) -> np.random.Generator:
    """The generator of a micro-batch's shared choices (the mask-only iteration)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(step), 0x5A3])


class EpochDistributedSampler(DistributedSampler):
    """``DistributedSampler`` that yields ``(epoch, index)`` keys and can resume mid-epoch.

    The permutation of an epoch depends only on ``seed + epoch`` (as in ``DistributedSampler``);
    rank ``r`` takes every ``world_size``-th index. :meth:`set_epoch` selects the epoch and
    :meth:`set_start` skips the first samples of this rank's share (a resumed run).

    Args:
        dataset: The dataset (only its length is used).
        num_replicas: World size.
        rank: This process's rank.
        shuffle: Shuffle per epoch.
        seed: Shuffle seed.
        limit: Yield at most this many keys per epoch (whole optimizer steps), or None.
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        *,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        limit: int | None = None,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.limit = self.num_samples if limit is None else min(int(limit), self.num_samples)
        self.start = 0

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` samples of this rank's share of the current epoch."""
        if not 0 <= start <= self.limit:
            raise ValueError(f"start must be in [0, {self.limit}], got {start}")
        self.start = int(start)

    def __iter__(self) -> Iterator[SampleKey]:  # type: ignore[override]
        indices = list(super().__iter__())[: self.limit]
        for index in indices[self.start :]:
            yield (self.epoch, int(index))

    def __len__(self) -> int:
        return self.limit - self.start


# --------------------------------------------------------------------------------------------
# Sample finishing: flips, normalisation, intensity augmentation


@dataclass(frozen=True)
class AugmentConfig:
    """Per-sample random operations applied after cropping."""

    flip_prob: float = 0.5
    intensity_aug_prob: float = 0.0
    normalize: bool = True


def zscore_nonzero(array: np.ndarray) -> np.ndarray:
    """Z-score over the voxels > 0 (torchio ``ZNormalization(masking_method=x > 0)``).

    Delegates to ``sammed3d.data.transforms.zscore_foreground``. A crop where that is undefined
    (no voxel > 0, or all of them equal; torchio would raise) is only shifted by the mean of
    its voxels > 0 (or left as is), so one degenerate crop cannot stop a long run.
    """
    from sammed3d.data.transforms import zscore_foreground

    try:
        return np.asarray(zscore_foreground(array), dtype=np.float32)
    except ValueError as exc:
        logger.debug("crop not z-scored (%s)", exc)
        data = np.asarray(array, dtype=np.float32)
        positive = data[data > 0]
        return data - float(positive.mean()) if positive.size else data.copy()


def finish_sample(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    aug: AugmentConfig,
) -> dict[str, torch.Tensor]:
    """Flip, normalise and augment one crop.

    Args:
        image: ``(S, S, S)`` float crop (CT already clamped).
        label: ``(S, S, S)`` bool crop of the target.
        rng: The sample's generator (:func:`sample_rng`).
        aug: What to apply.

    Returns:
        ``image`` ``(1, S, S, S)`` float32, ``label`` ``(1, S, S, S)`` float32 in {0, 1} and
        ``seed`` (int64 scalar) for the sample's click draws.
    """
    from monai.transforms import Compose, RandFlipd, RandScaleIntensityd, RandShiftIntensityd
    from monai.utils import convert_to_tensor

    transform_seed = int(rng.integers(2**31 - 1))
    click_seed = int(rng.integers(2**62))
    data: dict[str, Any] = {
        "image": np.ascontiguousarray(image, dtype=np.float32)[None],
        "label": np.ascontiguousarray(label, dtype=np.float32)[None],
    }
    flips = Compose(
        [RandFlipd(keys=["image", "label"], prob=aug.flip_prob, spatial_axis=a) for a in range(3)]
    )
    flips.set_random_state(seed=transform_seed)
    data = flips(data)
    img = convert_to_tensor(data["image"], track_meta=False, dtype=torch.float32)
    lab = convert_to_tensor(data["label"], track_meta=False, dtype=torch.float32)
    if aug.normalize:
        img = torch.from_numpy(zscore_nonzero(img.numpy()[0]))[None]
    if aug.intensity_aug_prob > 0:
        intensity = Compose(
            [
                RandScaleIntensityd(keys="image", factors=0.1, prob=aug.intensity_aug_prob),
                RandShiftIntensityd(keys="image", offsets=0.1, prob=aug.intensity_aug_prob),
            ]
        )
        intensity.set_random_state(seed=transform_seed + 1)
        img = convert_to_tensor(
            intensity({"image": img})["image"], track_meta=False, dtype=torch.float32
        )
    return {
        "image": img.contiguous(),
        "label": lab.contiguous(),
        "seed": torch.tensor(click_seed, dtype=torch.int64),
    }


def batch_zscore(image: torch.Tensor) -> torch.Tensor:
    """The published per-micro-batch z-score: one mean/std over the voxels > 0 of the batch.

    Args:
        image: ``(B, 1, S, S, S)``.

    Returns:
        The normalised batch (same shape).
    """
    mask = image > 0
    if int(mask.sum()) < 2:
        raise ValueError("cannot z-score a micro-batch with fewer than two voxels > 0")
    values = image[mask]
    std = values.std()  # unbiased, as torchio
    if not float(std) > 0:
        raise ValueError("cannot z-score a micro-batch whose voxels > 0 are all equal")
    return (image - values.mean()) / std


# --------------------------------------------------------------------------------------------
# Synthetic data (tests, benchmarks)


class SyntheticDataset(Dataset[dict[str, torch.Tensor]]):
    """Random ellipsoids in noise, deterministic per index: for tests and benchmarks.

    Args:
        length: Number of targets.
        size: Crop edge (the model's ``img_size``).
        seed: Run seed (sample randomness also depends on the epoch).
        aug: Flips / normalisation / intensity augmentation as for real data.
    """

    def __init__(
        self,
        length: int,
        size: int,
        *,
        seed: int = 0,
        aug: AugmentConfig | None = None,
    ) -> None:
        if length < 1 or size < 8:
            raise ValueError(f"need length >= 1 and size >= 8, got {length} and {size}")
        self.length = length
        self.size = size
        self.seed = seed
        self.aug = aug or AugmentConfig()

    def __len__(self) -> int:
        return self.length

    def volume(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The un-augmented ``(image, label)`` of target ``index`` (``(S, S, S)`` each)."""
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, int(index), 7])
        s = self.size
        grid = np.stack(np.meshgrid(*(np.arange(s),) * 3, indexing="ij"), axis=-1)
        centre = rng.uniform(0.35 * s, 0.65 * s, size=3)
        radii = rng.uniform(0.1 * s, 0.22 * s, size=3)
        label = (((grid - centre) / radii) ** 2).sum(-1) <= 1.0
        image = rng.normal(20.0, 8.0, size=(s, s, s)).astype(np.float32)
        image[label] += 60.0
        image[: s // 8] = 0.0  # some background at or below 0, as outside a body
        return image.clip(min=0.0).astype(np.float32), label

    def __getitem__(self, key: SampleKey | int) -> dict[str, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (0, int(key))
        image, label = self.volume(index)
        sample = finish_sample(image, label, sample_rng(self.seed, epoch, index), self.aug)
        sample["index"] = torch.tensor(index, dtype=torch.int64)
        return sample


# --------------------------------------------------------------------------------------------
# Pre-processing cache


@dataclass(frozen=True)
class CacheParams:
    """Everything that changes the cached arrays (part of the cache folder name)."""

    target_spacing: tuple[float, float, float] = (1.5, 1.5, 1.5)
    ct_clamp: tuple[float, float] | None = (-1000.0, 1000.0)
    version: int = CACHE_VERSION

    def folder_name(self) -> str:
        """A readable, unique folder name for these parameters."""
        sp = "x".join(f"{s:g}" for s in self.target_spacing)
        ct = "noclamp" if self.ct_clamp is None else f"ct{self.ct_clamp[0]:g}_{self.ct_clamp[1]:g}"
        return f"v{self.version}_sp{sp}_{ct}"


@dataclass(frozen=True)
class CachedTarget:
    """A kept training target: cached arrays plus the crop centre.

    Attributes:
        image: ``.npy`` of the pre-processed image (canonical RAS, resampled, clamped).
        label: ``.npy`` of the label map on the same grid.
        label_value: The class's voxel value in ``label``.
        center: Bounding-box centre of the target (continuous voxel index, as returned by
            ``sammed3d.data.transforms.bbox_center``).
        voxels: Foreground voxel count.
        case_id / class_name / dataset / modality: Provenance.
    """

    image: str
    label: str
    label_value: int
    center: tuple[float, float, float]
    voxels: int
    case_id: str
    class_name: str
    dataset: str
    modality: str


def _file_key(path: Path) -> str:
    """Cache key of a source file: its absolute path, size and modification time."""
    st = path.stat()
    ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    digest = hashlib.sha1(ident.encode()).hexdigest()[:16]
    stem = path.name.split(".")[0][:40]
    return f"{stem}-{digest}"


def _atomic_save_npy(array: np.ndarray, path: Path) -> None:
    from sammed3d.io import atomic_write  # mode from the umask, like every output

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array)

    atomic_write(path, write)


def _preprocess_case(
    image_path: Path, label_path: Path, modality: str, params: CacheParams
) -> tuple[np.ndarray, np.ndarray]:
    """Read, resample, canonicalise (and clamp CT) one image and its label map."""
    from sammed3d.data import transforms as T
    from sammed3d.io import read_volume

    image = read_volume(image_path)
    label = read_volume(label_path)
    _check_same_grid(image, label, image_path, label_path)
    spacing = tuple(float(s) for s in params.target_spacing)
    image_r = T.to_canonical(T.resample(image, spacing=spacing, interpolation="linear"))
    label_r = T.to_canonical(T.resample(label, spacing=spacing, interpolation="nearest"))
    img = np.asarray(image_r.array, dtype=np.float32)
    lab = np.asarray(label_r.array)
    if img.shape != lab.shape:  # pragma: no cover - same input grid gives the same output grid
        raise ValueError(f"{image_path} and {label_path} resample to different grids")
    if modality == "CT" and params.ct_clamp is not None:
        img = T.ct_clamp(img, params.ct_clamp[0], params.ct_clamp[1])
    if not np.issubdtype(lab.dtype, np.integer) and lab.dtype != np.bool_:
        rounded = np.rint(lab)
        if not np.array_equal(rounded, lab):
            raise ValueError(f"{label_path} holds non-integer label values")
        lab = rounded
    if lab.size and int(lab.min()) < 0:
        raise ValueError(f"{label_path} holds negative label values")
    lab_dtype = np.uint8 if lab.size == 0 or int(lab.max()) < 256 else np.int32
    return np.ascontiguousarray(img, dtype=np.float32), np.ascontiguousarray(lab, dtype=lab_dtype)


def _check_same_grid(image: Any, label: Any, image_path: Path, label_path: Path) -> None:
    """Image and label must share shape, spacing, origin and direction (never "fixed")."""
    problems = []
    if not np.allclose(image.direction, label.direction, atol=1e-4):  # first: it moves origins
        from sammed3d.evaluation.metrics import direction_note

        problems.append(f"direction differs from the image's ({direction_note(label, image)})")
    if image.shape != label.shape:
        problems.append(f"shape {label.shape} vs image {image.shape}")
    if not np.allclose(image.spacing, label.spacing, rtol=1e-3, atol=1e-4):
        problems.append(f"spacing {label.spacing} vs image {image.spacing}")
    if not np.allclose(image.origin, label.origin, rtol=0, atol=1e-2 * max(image.spacing)):
        problems.append(f"origin {label.origin} vs image {image.origin}")
    if problems:
        raise ValueError(f"{label_path} does not match its image {image_path}: {problems[0]}")


def _target_stats(label: np.ndarray, values: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Voxel count and crop centre (continuous voxel index) per label value."""
    from sammed3d.data.transforms import bbox_center

    out: dict[int, dict[str, Any]] = {}
    counts = np.bincount(label.ravel().astype(np.int64), minlength=max(values, default=0) + 1)
    for value in values:
        n = int(counts[value]) if value < counts.size else 0
        center = [float(c) for c in bbox_center(label == value)] if n else None
        out[int(value)] = {"voxels": n, "center": center}
    return out


def build_cache(
    targets: Sequence[Any],
    cache_dir: str | os.PathLike[str],
    params: CacheParams,
    *,
    rank: int = 0,
    world_size: int = 1,
    show_progress: bool = True,
) -> Path:
    """Pre-process the images and label maps of ``targets`` into ``cache_dir``.

    Work is split by case across ranks (call it on every rank, then synchronise); entries that
    already exist are reused. Each case gets ``images/<key>.npy``, ``labels/<key>.npy`` and
    ``stats/<key>.json``; all writes are atomic, so an interrupted build resumes.

    Args:
        targets: ``sammed3d.data.layout.Target`` objects.
        cache_dir: Root cache folder; a sub-folder per :class:`CacheParams` is used.
        params: Spacing and CT clamp.
        rank / world_size: This process's share of the cases (under torchrun: the local rank
            and the number of processes per node).
        show_progress: tqdm bar (on ``rank`` 0 only).

    Returns:
        The parameter-specific cache folder.
    """
    root = Path(cache_dir) / params.folder_name()
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "params.json", json.dumps(asdict(params), indent=2))
    cases: dict[tuple[str, str], tuple[Path, Path, str, set[int], set[int]]] = {}
    for t in targets:
        key = (str(t.image), str(t.label))
        entry = cases.setdefault(key, (Path(t.image), Path(t.label), t.modality, set(), set()))
        entry[3].add(int(t.label_value))
        entry[4].update(int(v) for v in getattr(t, "declared_values", ()))
    work = sorted(cases.values(), key=lambda e: (str(e[1]), str(e[0])))[rank::world_size]
    bar = tqdm(work, desc="cache", unit="case", disable=not show_progress or rank != 0)
    for image_path, label_path, modality, values, declared in bar:
        img_key, lab_key = _file_key(image_path), _file_key(label_path)
        img_file = root / "images" / f"{img_key}.npy"
        lab_file = root / "labels" / f"{lab_key}__{img_key}.npy"
        stats_file = root / "stats" / f"{lab_key}__{img_key}.json"
        if stats_file.exists():
            stats = json.loads(stats_file.read_text(encoding="utf-8"))
            if "error" in stats:
                continue
            if (
                img_file.exists()
                and lab_file.exists()
                and set(map(int, stats["targets"])) >= values
            ):
                continue
        try:
            img, lab = _preprocess_case(image_path, label_path, modality, params)
        except (ValueError, OSError) as exc:  # VolumeError is a ValueError
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            logger.warning("skipping %s: %s", label_path, message)
            stats = {"image": str(image_path), "label": str(label_path), "error": message}
            atomic_write_text(stats_file, json.dumps(stats))
            continue
        if not img_file.exists():
            _atomic_save_npy(img, img_file)
        _atomic_save_npy(lab, lab_file)
        stats = {
            "image": str(image_path),
            "label": str(label_path),
            "shape": list(lab.shape),
            "targets": {str(v): s for v, s in _target_stats(lab, sorted(values)).items()},
        }
        if declared:  # a value nobody declared: usually the wrong label file
            stats["undeclared"] = undeclared_values(lab, declared)
        atomic_write_text(stats_file, json.dumps(stats))
    return root


def load_cached_targets(
    targets: Sequence[Any],
    cache_root: str | os.PathLike[str],
    *,
    min_target_voxels: int = 1000,
    write_manifest: bool = False,
    drops: dict[str, int] | None = None,
    undeclared: dict[str, list[int]] | None = None,
) -> list[CachedTarget]:
    """The kept targets of a built cache, in ``targets`` order.

    Args:
        targets: The same ``Target`` objects given to :func:`build_cache`.
        cache_root: The folder :func:`build_cache` returned.
        min_target_voxels: Drop targets with fewer foreground voxels after resampling.
        write_manifest: Write ``manifest.jsonl`` (one line per target: kept or the drop reason).
        drops: If given, filled with the number of dropped targets per reason
            (``"too small"``, ``"pre-processing failed"``).
        undeclared: If given, filled with label file -> the values it holds that its dataset
            does not declare (recorded when the cache was built; never trained on).

    Raises:
        FileNotFoundError: a case is missing from the cache (build it first).
    """
    root = Path(cache_root)
    kept: list[CachedTarget] = []
    lines: list[str] = []
    for t in targets:
        image_path, label_path = Path(t.image), Path(t.label)
        img_key, lab_key = _file_key(image_path), _file_key(label_path)
        stats_file = root / "stats" / f"{lab_key}__{img_key}.json"
        if not stats_file.exists():
            raise FileNotFoundError(
                f"pre-processing cache has no entry for {label_path} (expected {stats_file}); "
                "build the cache first"
            )
        entry = json.loads(stats_file.read_text(encoding="utf-8"))
        record: dict[str, Any] = {
            "case_id": t.case_id,
            "class_name": t.class_name,
            "label_value": int(t.label_value),
            "dataset": t.dataset,
            "image": str(image_path),
            "label": str(label_path),
        }
        if "error" in entry:
            record.update(kept=False, reason=f"pre-processing failed: {entry['error']}")
            lines.append(json.dumps(record))
            if drops is not None:
                drops["pre-processing failed"] = drops.get("pre-processing failed", 0) + 1
            continue
        if undeclared is not None and entry.get("undeclared"):
            undeclared[str(label_path)] = list(entry["undeclared"])
        stats = entry["targets"].get(str(int(t.label_value)))
        if stats is None:
            raise FileNotFoundError(f"cache entry {stats_file} lacks label value {t.label_value}")
        if stats["voxels"] < max(1, min_target_voxels):
            record.update(kept=False, reason=f"{stats['voxels']} voxels < {min_target_voxels}")
            if drops is not None:
                drops["too small"] = drops.get("too small", 0) + 1
        else:
            record.update(kept=True, reason="", voxels=stats["voxels"])
            kept.append(
                CachedTarget(
                    image=str(root / "images" / f"{img_key}.npy"),
                    label=str(root / "labels" / f"{lab_key}__{img_key}.npy"),
                    label_value=int(t.label_value),
                    center=tuple(stats["center"]),  # type: ignore[arg-type]
                    voxels=int(stats["voxels"]),
                    case_id=t.case_id,
                    class_name=t.class_name,
                    dataset=t.dataset,
                    modality=t.modality,
                )
            )
        lines.append(json.dumps(record))
    if write_manifest:
        atomic_write_text(root / "manifest.jsonl", "\n".join(lines) + "\n")
    return kept


class CachedTargetDataset(Dataset[dict[str, torch.Tensor]]):
    """Crops of cached targets (see the module docstring for the exact steps).

    Args:
        targets: Kept targets from :func:`load_cached_targets`.
        crop_size: Crop edge (the model's ``img_size``).
        seed: Run seed.
        random_shift: Maximum random shift of the crop centre per axis (voxels).
        aug: Flips / normalisation / intensity augmentation.
    """

    def __init__(
        self,
        targets: Sequence[CachedTarget],
        crop_size: int,
        *,
        seed: int = 0,
        random_shift: int = 0,
        aug: AugmentConfig | None = None,
    ) -> None:
        if not targets:
            raise ValueError("no training targets (all were dropped or none were found)")
        self.targets = list(targets)
        self.crop_size = int(crop_size)
        self.seed = int(seed)
        self.random_shift = int(random_shift)
        self.aug = aug or AugmentConfig()

    def __len__(self) -> int:
        return len(self.targets)

    def crop(self, index: int, rng: np.random.Generator | None = None) -> tuple[np.ndarray, ...]:
        """``(image, label)`` crops ``(S, S, S)`` of target ``index`` before augmentation."""
        from sammed3d.data.transforms import crop_or_pad

        t = self.targets[index]
        center = np.asarray(t.center, dtype=np.float64)
        if self.random_shift and rng is not None:
            center = center + rng.integers(-self.random_shift, self.random_shift + 1, size=3)
        image = np.load(t.image, mmap_mode="r")
        label = np.load(t.label, mmap_mode="r")
        img_crop, _ = crop_or_pad(image, tuple(center), size=self.crop_size)
        lab_crop, _ = crop_or_pad(label, tuple(center), size=self.crop_size)
        return np.asarray(img_crop, dtype=np.float32), np.asarray(lab_crop) == t.label_value

    def __getitem__(self, key: SampleKey | int) -> dict[str, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (0, int(key))
        rng = sample_rng(self.seed, epoch, index)
        image, label = self.crop(index, rng)
        sample = finish_sample(image, label, rng, self.aug)
        sample["index"] = torch.tensor(index, dtype=torch.int64)
        return sample


def steps_per_epoch(num_samples_per_rank: int, batch_size: int, accumulation_steps: int) -> int:
    """Whole optimizer steps in one epoch of one rank's share (leftover samples are skipped)."""
    return num_samples_per_rank // (batch_size * accumulation_steps)


def per_rank_samples(dataset_len: int, world_size: int) -> int:
    """Samples per rank and epoch (``DistributedSampler`` pads to a multiple of the world)."""
    return math.ceil(dataset_len / world_size)


# --------------------------------------------------------------------------------------------
# Dataset construction (what the trainer trains on)


def check_data_roots(cfg: TrainingConfig) -> None:
    """Fail early (before a model or a cache is built) on missing dataset folders.

    Raises:
        ConfigError: no ``data.roots`` and no generated data.
        FileNotFoundError: a root that is not a folder.
    """
    if not cfg.data.roots and cfg.data.synthetic_per_epoch > 0:
        return
    if not cfg.data.roots:
        raise ConfigError(
            "data.roots is empty: give the dataset folders, e.g. data.roots=[/data/Dataset001_X]"
        )
    for root in cfg.data.roots:
        if not Path(root).is_dir():
            raise FileNotFoundError(f"dataset folder not found: {root} (data.roots)")


def build_generated_dataset(cfg: TrainingConfig) -> Dataset[dict[str, torch.Tensor]]:
    """The on-the-fly synthetic crops of ``cfg.data`` (``synthetic_per_epoch`` per epoch).

    Raises:
        FileNotFoundError: a missing ``data.shape_bank`` or ``data.anatomy`` file.
        ConfigError: the anatomy file is not an ``.npz`` with ``image`` and ``tissue`` (and
            ``structures`` when ``data.anatomy_structure_fraction > 0``).
    """
    from sammed3d.build import get_config
    from sammed3d.training.synthesis import GeneratedDataset, SynthesisConfig

    d = cfg.data
    for path in (d.shape_bank, d.anatomy):
        if path and not Path(path).is_file():
            raise FileNotFoundError(f"file not found: {path} (data.shape_bank / data.anatomy)")
    if d.anatomy and d.anatomy_fraction > 0:
        _check_anatomy_file(
            d.anatomy,
            needs_structures=d.anatomy_structure_fraction > 0,
            structure_clicks=d.anatomy_structure_clicks,
        )
    size = get_config(cfg.model.name).img_size
    return GeneratedDataset(
        d.synthetic_per_epoch,
        SynthesisConfig(size=size),
        seed=cfg.train.seed,
        shape_bank=d.shape_bank,
        defer=d.generate_on_device,
        targets=d.targets_per_crop,
        anatomy=d.anatomy,
        anatomy_fraction=d.anatomy_fraction,
        structure_fraction=d.anatomy_structure_fraction,
        structure_clicks=d.anatomy_structure_clicks,
    )


def _check_anatomy_file(path: str, needs_structures: bool, structure_clicks: str = "any") -> None:
    """One-line :class:`ConfigError` unless ``path`` is an ``.npz`` with ``image`` and
    ``tissue`` arrays (and ``structures`` when ``needs_structures``) that
    :class:`~sammed3d.training.synthesis.Anatomy` accepts."""
    try:
        with np.load(path) as data:
            names = set(data.files)
    except Exception as exc:  # not a zip, truncated, a pickle: never a deep traceback
        raise ConfigError(
            f"data.anatomy must be an .npz file (image, tissue arrays): cannot read {path}: "
            f"{type(exc).__name__}"
        ) from None
    missing = [k for k in ("image", "tissue") if k not in names]
    if missing:
        raise ConfigError(f"data.anatomy {path} has no {', '.join(missing)} array(s)")
    if needs_structures and "structures" not in names:
        raise ConfigError(
            f"data.anatomy_structure_fraction > 0 needs a 'structures' map in {path}; "
            "rebuild it with tools/build_demo_data.py"
        )
    from sammed3d.training.synthesis import Anatomy

    try:  # shapes, an empty map, structure bits: before training starts, not in a worker
        Anatomy.load(path, structure_clicks=structure_clicks)
    except ValueError as exc:
        raise ConfigError(f"data.anatomy {path}: {exc}") from None


def drop_summary(drops: dict[str, int], min_voxels: int, spacing: Sequence[float]) -> str:
    """Why targets were dropped, per reason, naming the setting that decides it.

    >>> drop_summary({"too small": 5}, 1000, [1.5, 1.5, 1.5])
    '5 dropped with fewer than data.min_target_voxels=1000 voxels at 1.5 mm (3.38 ml)'
    """
    parts = []
    if drops.get("too small"):
        mm3 = min_voxels * float(np.prod(np.asarray(spacing, dtype=np.float64)))
        grid = " x ".join(f"{s:g}" for s in spacing) if len(set(spacing)) > 1 else f"{spacing[0]:g}"
        parts.append(
            f"{drops['too small']} dropped with fewer than data.min_target_voxels={min_voxels} "
            f"voxels at {grid} mm ({mm3 / 1000:.3g} ml)"
        )
    if drops.get("pre-processing failed"):
        parts.append(f"{drops['pre-processing failed']} whose case failed pre-processing")
    return "; ".join(parts) or "none dropped"


def build_training_dataset(
    cfg: TrainingConfig, ctx: DistContext | None = None, *, show_progress: bool = True
) -> CachedTargetDataset:
    """Discover the targets of ``cfg.data.roots``, build/reuse the cache and return the dataset.

    Cache building is split across the processes of each node (call on every rank), so it also
    works with a node-local ``cache_dir``; rank 0 writes ``manifest.jsonl``.

    Raises:
        ConfigError: no ``data.roots``.
        FileNotFoundError / ValueError: from dataset discovery or pre-processing; every target
            dropped.
    """
    from sammed3d.build import get_config
    from sammed3d.data.layout import discover_dataset, iter_targets
    from sammed3d.training.distributed import DistContext, barrier

    ctx = ctx or DistContext()
    d = cfg.data
    check_data_roots(cfg)
    targets = []
    for root in d.roots:
        targets += iter_targets(discover_dataset(root, split=d.split))
    cache_dir = Path(d.cache_dir) if d.cache_dir else Path(cfg.run.output_dir) / "cache"
    params = CacheParams(
        target_spacing=(d.target_spacing[0], d.target_spacing[1], d.target_spacing[2]),
        ct_clamp=None if d.ct_clamp is None else (d.ct_clamp[0], d.ct_clamp[1]),
    )
    logger.info("pre-processing cache for %d targets in %s", len(targets), cache_dir)
    root = build_cache(
        targets,
        cache_dir,
        params,
        rank=ctx.local_rank,
        world_size=ctx.local_world_size,
        show_progress=show_progress and ctx.is_main,
    )
    barrier(ctx)
    drops: dict[str, int] = {}
    undeclared: dict[str, list[int]] = {}
    kept = load_cached_targets(
        targets,
        root,
        min_target_voxels=d.min_target_voxels,
        write_manifest=ctx.is_main,
        drops=drops,
        undeclared=undeclared,
    )
    if undeclared and ctx.is_main:
        shown = "; ".join(
            f"{Path(p).name}: {', '.join(map(str, v))}" for p, v in list(undeclared.items())[:3]
        )
        more = f" and {len(undeclared) - 3} more" if len(undeclared) > 3 else ""
        logger.warning(
            "%d label file(s) hold values their dataset.json does not declare, never trained "
            "on (a wrong label file?): %s%s",
            len(undeclared),
            shown,
            more,
        )
    if len(kept) < len(targets):
        logger.info(
            "kept %d of %d targets: %s (see %s)",
            len(kept),
            len(targets),
            drop_summary(drops, d.min_target_voxels, d.target_spacing),
            root / "manifest.jsonl",
        )
    lost = sorted({t.class_name for t in targets} - {k.class_name for k in kept})
    if lost and kept and ctx.is_main:
        logger.warning(
            "class(es) %s: no training target left (every one dropped, see above), so never "
            "trained; lower data.min_target_voxels (now %d) to train small ones",
            ", ".join(repr(c) for c in lost),
            d.min_target_voxels,
        )
    if not kept:
        raise ValueError(
            f"all {len(targets)} targets were dropped (fewer than data.min_target_voxels="
            f"{d.min_target_voxels} voxels); see {root / 'manifest.jsonl'}"
        )
    crop = get_config(cfg.model.name).img_size
    return CachedTargetDataset(
        kept,
        crop,
        seed=cfg.train.seed,
        random_shift=d.random_shift,
        aug=AugmentConfig(
            flip_prob=d.flip_prob,
            intensity_aug_prob=d.intensity_aug_prob,
            normalize=d.normalization == "per_sample",
        ),
    )


def build_dataset(
    cfg: TrainingConfig, ctx: DistContext | None = None, *, show_progress: bool = True
) -> Dataset[dict[str, torch.Tensor]]:
    """Everything a run trains on: the task-model dataset (``task.kind=semantic``), or the
    cached targets of ``data.roots`` followed by the generated crops (either may be absent).

    Items are indexed by the ``(epoch, index)`` keys of :class:`EpochDistributedSampler`. Call
    on every rank (the cache is built by all processes of a node).

    Raises:
        ConfigError / FileNotFoundError / ValueError: see :func:`build_training_dataset` and
            :func:`build_generated_dataset`.
    """
    if cfg.task.kind == "semantic":
        from sammed3d.training.semantic_data import build_semantic_dataset

        return build_semantic_dataset(cfg, ctx, show_progress=show_progress)
    parts: list[Dataset[dict[str, torch.Tensor]]] = []
    if cfg.data.roots:
        parts.append(build_training_dataset(cfg, ctx, show_progress=show_progress))
    if cfg.data.synthetic_per_epoch > 0:
        parts.append(build_generated_dataset(cfg))
    if not parts:
        check_data_roots(cfg)  # raises: nothing to train on
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


def deferred_generator(dataset: Dataset[Any]) -> Any:
    """The :class:`~sammed3d.training.synthesis.GeneratedDataset` inside ``dataset`` whose
    crops are drawn on the training device (``data.generate_on_device``), or None."""
    from sammed3d.training.synthesis import GeneratedDataset

    parts = getattr(dataset, "datasets", [dataset])
    for part in parts:
        if isinstance(part, GeneratedDataset) and part.defer:
            return part
    return None


__all__ = [
    "CACHE_VERSION",
    "AugmentConfig",
    "CacheParams",
    "CachedTarget",
    "CachedTargetDataset",
    "EpochDistributedSampler",
    "SyntheticDataset",
    "batch_zscore",
    "build_cache",
    "build_dataset",
    "build_generated_dataset",
    "build_training_dataset",
    "check_data_roots",
    "deferred_generator",
    "finish_sample",
    "load_cached_targets",
    "per_rank_samples",
    "sample_rng",
    "step_rng",
    "steps_per_epoch",
]
