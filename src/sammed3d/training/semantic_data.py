"""Training data of task models (``task.kind=semantic``): whole labelled cases, class-balanced
crops.

Pipeline (``docs/transfer.md``):

1. **Cases and classes.** Every case of ``data.roots`` with one multi-class label map
   (nnU-Net/MSD, case folders, manifest, ...). The classes are ``task.classes`` (names as in
   ``dataset.json``) or, when empty, every class the datasets declare (all datasets must then
   declare the same names). Class ``i`` becomes label ``i + 1`` whatever its value in each
   dataset; declared classes that were not chosen become background.
2. **Cache.** The interactive trainer's pre-processing cache (``sammed3d.training.data``:
   resampled to ``data.target_spacing``, RAS, CT clamp) plus, per case, a small ``.npz`` in
   ``<cache>/semantic/``: the label values present with their voxel counts, up to
   :data:`LOCATIONS_PER_VALUE` voxel positions per value, and the case's z-score statistics.
3. **Checks** (one-line ``ValueError`` naming file and value): a label value that the
   dataset does not declare; a chosen class that occurs in no training case. A class missing
   from *some* cases is allowed: every case is taken as fully annotated (as in nnU-Net), so a
   class absent from a label map is absent from that image.
4. **Crops** (class-balanced): with probability ``task.foreground_fraction`` a class is drawn
   uniformly among the classes, then a case that contains it, then one of its voxels, and the
   crop is centred within a quarter of the crop size of it; otherwise the crop centre is
   uniform in a random case. Crops reaching outside the volume are zero-padded (label:
   background), so images smaller than the crop work. The crop is z-scored with its case's
   statistics and flipped/intensity-augmented as interactive crops are.

Randomness: every choice of a sample comes from ``sample_rng(seed, epoch, index)``, so a
resumed run (and every DDP rank) sees exactly the samples it would have seen.
"""

from __future__ import annotations

import json
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from sammed3d.training.config import ConfigError, TrainingConfig
from sammed3d.training.data import AugmentConfig, SampleKey, finish_sample, sample_rng

logger = logging.getLogger(__name__)

#: Voxel positions kept per label value and case for centring class-balanced crops.
LOCATIONS_PER_VALUE = 2000
#: Bump when the ``semantic/*.npz`` files change meaning.
SEMANTIC_CACHE_VERSION = 1


@dataclass(frozen=True)
class TaskData:
    """The resolved datasets of a semantic run.

    Attributes:
        classes: Class names; class ``i`` is output label ``i + 1``.
        modality: The training images' modality (``mixed`` when they differ).
        cases: ``sammed3d.data.layout.Case`` objects of every root.
    """

    classes: tuple[str, ...]
    modality: str
    cases: list[Any]


def resolve_task_data(cfg: TrainingConfig) -> TaskData:
    """Discover the cases of ``cfg.data.roots`` and resolve the classes (names only: cheap).

    Raises:
        ConfigError: no ``data.roots``.
        FileNotFoundError: a root or a file it lists is missing.
        ValueError: a layout with one mask file per class, datasets that declare different
            classes (without ``task.classes``), a chosen class a dataset does not declare.
    """
    from sammed3d.data.layout import discover_dataset

    d = cfg.data
    if not d.roots:
        raise ConfigError(
            "data.roots is empty: give the dataset folders, e.g. data.roots=[/data/Dataset001_X]"
        )
    cases: list[Any] = []
    for root in d.roots:
        if not Path(root).exists():
            raise FileNotFoundError(f"dataset folder not found: {root} (data.roots)")
        found = discover_dataset(root, split=d.split)
        per_class = [c for c in found if c.masks]
        if per_class:
            raise ValueError(
                f"{root}: task.kind=semantic needs one label map per case, but case "
                f"{per_class[0].case_id!r} stores one mask file per class"
            )
        cases += found
    declared: dict[str, tuple[str, ...]] = {}
    for case in cases:
        names = tuple(n for n, _ in sorted(case.labels.items(), key=lambda kv: (kv[1], kv[0])))
        declared.setdefault(case.dataset, names)
    wanted = tuple(cfg.task.classes)
    if not wanted:
        sets = {names for names in declared.values()}
        if len(sets) > 1:
            listing = "; ".join(f"{ds}: {list(n)}" for ds, n in sorted(declared.items()))
            raise ValueError(
                f"the datasets declare different classes ({listing}); choose the classes to "
                "learn with task.classes=[...]"
            )
        wanted = next(iter(sets))
        if not wanted:
            raise ValueError(f"the datasets in {d.roots} declare no foreground class")
    for case in cases:
        missing = [c for c in wanted if c not in case.labels]
        if missing:
            raise ValueError(
                f"dataset {case.dataset} does not declare class {missing[0]!r} of task.classes "
                f"(it declares {sorted(case.labels)})"
            )
    modalities = sorted({c.modality for c in cases})
    modality = modalities[0] if len(modalities) == 1 else "mixed"
    return TaskData(classes=wanted, modality=modality, cases=cases)


@dataclass(frozen=True)
class SemanticCase:
    """One cached training case.

    Attributes:
        image / label: ``.npy`` arrays of the pre-processing cache (same grid).
        stats: Its ``semantic/*.npz`` (values, counts, voxel positions, z-score statistics).
        lut: Source label value -> output label (0 background), indexed by value.
        class_voxels: Voxels of each output class 1..N (resampled grid).
        mean / std: z-score statistics of the case's voxels > 0.
        case_id / dataset / source_label: Provenance (the label file as given).
    """

    image: str
    label: str
    stats: str
    lut: tuple[int, ...]
    class_voxels: tuple[int, ...]
    mean: float
    std: float
    shape: tuple[int, int, int]
    case_id: str
    dataset: str
    source_label: str


def _case_stats(label_file: Path, image_file: Path, out: Path, seed: int) -> None:
    """Write the ``semantic/*.npz`` of one cached case (atomic)."""
    from sammed3d.io import atomic_write
    from sammed3d.task.preprocess import zscore_stats

    label = np.load(label_file, mmap_mode="r")
    flat = np.asarray(label).reshape(-1)
    counts = np.bincount(flat.astype(np.int64, copy=False))
    values = np.flatnonzero(counts)
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {
        "version": np.array(SEMANTIC_CACHE_VERSION),
        "values": values.astype(np.int64),
        "counts": counts[values].astype(np.int64),
        "shape": np.array(label.shape, dtype=np.int64),
    }
    for value in values:
        if value == 0:
            continue
        where = np.flatnonzero(flat == value)
        if where.size > LOCATIONS_PER_VALUE:
            where = np.sort(rng.choice(where, LOCATIONS_PER_VALUE, replace=False))
        arrays[f"loc_{value}"] = np.stack(np.unravel_index(where, label.shape), axis=1).astype(
            np.int32
        )
    mean, std = zscore_stats(np.load(image_file, mmap_mode="r"))
    arrays["zscore"] = np.array([mean, std], dtype=np.float64)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(out, write, suffix=".npz")


def build_semantic_cases(
    cfg: TrainingConfig, ctx: Any = None, *, show_progress: bool = True
) -> tuple[list[SemanticCase], TaskData]:
    """Resolve the data, build/reuse the cache, check the labels; every rank calls this.

    Returns:
        ``(cases, data)``: the usable cases (cases whose pre-processing failed are skipped
        with a warning, as in interactive training) and the resolved :class:`TaskData`.

    Raises:
        ValueError: an undeclared label value, a class in no training case, no usable case
            (one line each); see also :func:`resolve_task_data`.
    """
    from tqdm import tqdm

    from sammed3d.data.layout import iter_targets
    from sammed3d.training.data import CacheParams, _file_key, build_cache
    from sammed3d.training.distributed import DistContext, barrier

    ctx = ctx or DistContext()
    d = cfg.data
    data = resolve_task_data(cfg)
    cache_dir = Path(d.cache_dir) if d.cache_dir else Path(cfg.run.output_dir) / "cache"
    params = CacheParams(
        target_spacing=(d.target_spacing[0], d.target_spacing[1], d.target_spacing[2]),
        ct_clamp=None if d.ct_clamp is None else (d.ct_clamp[0], d.ct_clamp[1]),
    )
    logger.info("pre-processing cache for %d cases in %s", len(data.cases), cache_dir)
    root = build_cache(
        iter_targets(data.cases),
        cache_dir,
        params,
        rank=ctx.local_rank,
        world_size=ctx.local_world_size,
        show_progress=show_progress and ctx.is_main,
    )
    entries = []
    for case in data.cases:
        img_key, lab_key = _file_key(Path(case.image)), _file_key(Path(case.label))
        stats_file = root / "stats" / f"{lab_key}__{img_key}.json"
        entries.append(
            (
                case,
                root / "images" / f"{img_key}.npy",
                root / "labels" / f"{lab_key}__{img_key}.npy",
                stats_file,
                root / "semantic" / f"{lab_key}__{img_key}.npz",
            )
        )
    barrier(ctx)  # the arrays of every case exist
    mine = entries[ctx.local_rank :: ctx.local_world_size]
    bar = tqdm(mine, desc="class maps", unit="case", disable=not (show_progress and ctx.is_main))
    for _, image, label, stats_file, out in bar:
        if out.exists() or _failed(stats_file):
            continue
        _case_stats(label, image, out, seed=zlib.crc32(out.name.encode()))
    barrier(ctx)
    spacing = "x".join(f"{v:g}" for v in d.target_spacing)
    return _load_cases(entries, data, spacing), data


def _failed(stats_file: Path) -> str | None:
    if not stats_file.exists():
        raise FileNotFoundError(f"pre-processing cache has no entry {stats_file}")
    stats = json.loads(stats_file.read_text(encoding="utf-8"))
    return str(stats["error"]) if "error" in stats else None


def _load_cases(entries: list[tuple[Any, ...]], data: TaskData, spacing: str) -> list[SemanticCase]:
    classes = data.classes
    out: list[SemanticCase] = []
    skipped = 0
    for case, image, label, stats_file, stats in entries:
        error = _failed(stats_file)
        if error is not None:
            logger.warning("skipping case %s: %s", case.case_id, error)
            skipped += 1
            continue
        with np.load(stats) as npz:
            values = [int(v) for v in npz["values"]]
            counts = [int(v) for v in npz["counts"]]
            mean, std = (float(v) for v in npz["zscore"])
            shape = tuple(int(s) for s in npz["shape"])
        declared = {0, *case.labels.values()}
        undeclared = [v for v in values if v not in declared]
        if undeclared:
            raise ValueError(
                f"{case.label}: label value {undeclared[0]} is not declared in the dataset's "
                f"dataset.json (declared: {sorted(declared)}); fix the label file or declare "
                "the class"
            )
        lut = [0] * (max(declared) + 1)
        for i, name in enumerate(classes):
            lut[case.labels[name]] = i + 1
        per_class = [0] * len(classes)
        for value, count in zip(values, counts, strict=True):
            if lut[value]:
                per_class[lut[value] - 1] += count
        out.append(
            SemanticCase(
                image=str(image),
                label=str(label),
                stats=str(stats),
                lut=tuple(lut),
                class_voxels=tuple(per_class),
                mean=mean,
                std=std,
                shape=shape,  # type: ignore[arg-type]
                case_id=case.case_id,
                dataset=case.dataset,
                source_label=str(case.label),
            )
        )
    if not out:
        raise ValueError(f"no usable training case: all {skipped} failed pre-processing")
    totals = np.sum([c.class_voxels for c in out], axis=0)
    absent = [name for name, n in zip(classes, totals, strict=True) if n == 0]
    if absent:
        raise ValueError(
            f"class {absent[0]!r} occurs in no training case (after resampling to "
            f"{spacing} mm); remove it from task.classes or add cases that contain it"
        )
    for name, i in zip(classes, range(len(classes)), strict=True):
        lacking = sum(1 for c in out if c.class_voxels[i] == 0)
        if lacking:
            logger.info(
                "class %r is absent from %d of %d cases (taken as background there)",
                name,
                lacking,
                len(out),
            )
    return out


class CachedCaseDataset(Dataset[dict[str, torch.Tensor]]):
    """Class-balanced multi-class crops of cached cases (see the module docstring).

    Args:
        cases: From :func:`build_semantic_cases`.
        num_classes: Foreground classes (labels 1..N).
        crop_size: Crop edge (the encoder's ``img_size``).
        length: Samples per epoch.
        seed: Run seed.
        foreground_fraction: Share of class-centred crops.
        aug: Flips / intensity augmentation (``normalize`` is ignored: cases are z-scored
            with their own statistics).

    Items: ``image`` ``(1, S, S, S)`` float32, ``label`` ``(1, S, S, S)`` int64 in 0..N,
    ``seed`` and ``index`` (int64 scalars).
    """

    def __init__(
        self,
        cases: list[SemanticCase],
        num_classes: int,
        crop_size: int,
        *,
        length: int,
        seed: int = 0,
        foreground_fraction: float = 0.5,
        aug: AugmentConfig | None = None,
    ) -> None:
        if not cases:
            raise ValueError("no training cases")
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self.cases = list(cases)
        self.num_classes = int(num_classes)
        self.crop_size = int(crop_size)
        self.length = int(length)
        self.seed = int(seed)
        self.foreground_fraction = float(foreground_fraction)
        base = aug or AugmentConfig()
        self.aug = AugmentConfig(base.flip_prob, base.intensity_aug_prob, normalize=False)
        #: output class (1..N) -> indexes of the cases that contain it
        self.cases_with = {
            c: [i for i, case in enumerate(self.cases) if case.class_voxels[c - 1] > 0]
            for c in range(1, self.num_classes + 1)
        }
        self.present = [c for c, found in self.cases_with.items() if found]

    def __len__(self) -> int:
        return self.length

    def _locations(self, case: SemanticCase, label: int) -> np.ndarray:
        """Stored voxel positions of output class ``label`` in ``case`` (``(n, 3)``)."""
        values = [v for v, out in enumerate(case.lut) if out == label]
        with np.load(case.stats) as npz:
            parts = [npz[f"loc_{v}"] for v in values if f"loc_{v}" in npz.files]
        return np.concatenate(parts) if parts else np.zeros((0, 3), dtype=np.int32)

    def choose(self, rng: np.random.Generator) -> tuple[int, np.ndarray]:
        """``(case index, crop centre)`` of one sample (continuous voxel index)."""
        size = self.crop_size
        if self.present and rng.random() < self.foreground_fraction:
            label = self.present[int(rng.integers(len(self.present)))]
            options = self.cases_with[label]
            index = options[int(rng.integers(len(options)))]
            locations = self._locations(self.cases[index], label)
            voxel = locations[int(rng.integers(len(locations)))].astype(np.float64)
            return index, voxel + rng.integers(-(size // 4), size // 4 + 1, size=3)
        index = int(rng.integers(len(self.cases)))
        shape = np.asarray(self.cases[index].shape, dtype=np.float64)
        return index, rng.uniform(0.0, 1.0, size=3) * np.maximum(shape - 1, 0)

    def crop(self, index: int, center: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised image and output-label crops ``(S, S, S)`` around ``center``."""
        from sammed3d.data.transforms import crop_or_pad
        from sammed3d.task.preprocess import normalise

        case = self.cases[index]
        image = np.load(case.image, mmap_mode="r")
        label = np.load(case.label, mmap_mode="r")
        img, _ = crop_or_pad(image, tuple(center), size=self.crop_size)
        lab, _ = crop_or_pad(label, tuple(center), size=self.crop_size)
        lut = np.asarray(case.lut, dtype=np.int64)
        return normalise(img, case.mean, case.std), lut[np.asarray(lab, dtype=np.int64)]

    def __getitem__(self, key: SampleKey | int) -> dict[str, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (0, int(key))
        rng = sample_rng(self.seed, epoch, index)
        case, center = self.choose(rng)
        image, label = self.crop(case, center)
        sample = finish_sample(image, label.astype(np.float32), rng, self.aug)
        sample["label"] = sample["label"].round().to(torch.int64)
        sample["index"] = torch.tensor(index, dtype=torch.int64)
        return sample


def build_semantic_dataset(
    cfg: TrainingConfig, ctx: Any = None, *, show_progress: bool = True
) -> CachedCaseDataset:
    """The training dataset of a semantic run (see :func:`build_semantic_cases`)."""
    from sammed3d.build import get_config

    cases, data = build_semantic_cases(cfg, ctx, show_progress=show_progress)
    n = len(data.classes)
    length = cfg.task.samples_per_epoch or len(cases) * n
    d = cfg.data
    return CachedCaseDataset(
        cases,
        n,
        get_config(cfg.model.name).img_size,
        length=length,
        seed=cfg.train.seed,
        foreground_fraction=cfg.task.foreground_fraction,
        aug=AugmentConfig(flip_prob=d.flip_prob, intensity_aug_prob=d.intensity_aug_prob),
    )


__all__ = [
    "LOCATIONS_PER_VALUE",
    "CachedCaseDataset",
    "SemanticCase",
    "TaskData",
    "build_semantic_cases",
    "build_semantic_dataset",
    "resolve_task_data",
]
