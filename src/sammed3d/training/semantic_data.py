"""Training data of task models (``task.kind=semantic``): whole labelled cases, class-balanced
crops.

Pipeline (``docs/transfer.md``):

1. **Cases and classes.** Every case of ``data.roots``, in any layout: one multi-class label
   map per case (nnU-Net/MSD, case folders, manifest, ...) or one mask file per class
   (TotalSegmentator, and the per-class folders ``sammed3d prepare`` writes: the class folders
   of one scan are merged into one case by ``sammed3d.data.layout.one_case_per_image``). The
   classes are ``task.classes`` (names as the dataset declares them) or, when empty, every
   class the datasets declare (all datasets must then declare the same names; a per-class
   dataset declares the classes of its folders). Class ``i`` becomes label ``i + 1`` whatever
   its value in each dataset; declared classes that were not chosen become background.
2. **Cache.** Cases with one mask file per class first get one label map
   (``<cache>/label_maps/``, :func:`sammed3d.task.labels.class_label_map`). Then the
   interactive trainer's pre-processing cache (``sammed3d.training.data``: resampled to
   ``data.target_spacing``, RAS, CT clamp) plus, per case, a small ``.npz`` in
   ``<cache>/semantic/``: the label values present with their voxel counts, up to
   :data:`LOCATIONS_PER_VALUE` voxel positions per value, the case's z-score statistics and
   its padding intensity.
3. **Checks** (one-line ``ValueError`` naming file and value): a label value that the
   dataset does not declare; a chosen class that occurs in no training case. A class missing
   from *some* cases is allowed: every case is taken as fully annotated (as in nnU-Net), so a
   class absent from a label map is absent from that image, and a scan of a per-class layout
   without a mask file for a class is background for it. The latter gets one warning per
   class that counts those cases and, when the root is a ``sammed3d prepare`` output, how many
   of those masks its ``manifest.jsonl`` records as dropped and by which rules
   (:func:`prepare_drops`): such a structure may be in the image, yet is trained as background.
4. **Crops** (class-balanced): with probability ``task.foreground_fraction`` a class is drawn
   uniformly among the classes, then a case that contains it, then one of its voxels, and the
   crop is centred within a quarter of the crop size of it; otherwise the crop centre is
   uniform in a random case. Crops reaching outside the volume are padded, so images smaller
   than the crop work: the image with the case's lowest intensity
   (:func:`sammed3d.task.preprocess.padding_intensity`: air in CT, not raw 0, which is soft
   tissue), the label with :data:`IGNORE_LABEL`, which the loss and the logged Dice leave out
   (``sammed3d.training.semantic``), as inference drops the padding. The crop is z-scored with
   its case's statistics and flipped/intensity-augmented as interactive crops are.

Randomness: every choice of a sample comes from ``sample_rng(seed, epoch, index)``, so a
resumed run (and every DDP rank) sees exactly the samples it would have seen.
"""

from __future__ import annotations

import dataclasses
import functools
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
#: Bump when the ``semantic/*.npz`` files change meaning (2: the padding intensity).
SEMANTIC_CACHE_VERSION = 2
#: Label of the crop voxels beyond the image: not trained, not scored.
IGNORE_LABEL = -1
#: How crops are padded (``sammed3d.task.preprocess.PADDING_MODES``; stored in checkpoints).
PADDING = "minimum"


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
        ValueError: datasets that declare different classes (without ``task.classes``), a
            chosen class a dataset does not declare.
    """
    from sammed3d.data.layout import discover_dataset, one_case_per_image

    d = cfg.data
    if not d.roots:
        raise ConfigError(
            "data.roots is empty: give the dataset folders, e.g. data.roots=[/data/Dataset001_X]"
        )
    cases: list[Any] = []
    for root in d.roots:
        if not Path(root).exists():
            raise FileNotFoundError(f"dataset folder not found: {root} (data.roots)")
        found = one_case_per_image(discover_dataset(root, split=d.split))
        cases += [as_mask_case(c) for c in found]
    declared = declared_classes(cases)
    wanted = tuple(cfg.task.classes)
    if not wanted:
        sets = set(declared.values())
        if len(sets) > 1:
            listing = "; ".join(f"{ds}: {list(n)}" for ds, n in sorted(declared.items()))
            raise ValueError(
                f"the datasets declare different classes ({listing}); choose the classes to "
                "learn with task.classes=[...]"
            )
        wanted = next(iter(sets))
        if not wanted:
            raise ValueError(f"the datasets in {d.roots} declare no foreground class")
    for dataset, names in sorted(declared.items()):
        missing = [c for c in wanted if c not in names]
        if missing:
            raise ValueError(
                f"dataset {dataset} does not declare class {missing[0]!r} of task.classes "
                f"(it declares {sorted(names)})"
            )
    source = (
        "of task.classes"
        if cfg.task.classes
        else "that other cases declare; choose the classes to learn with task.classes=[...]"
    )
    for case in cases:  # a label map declares its classes per case (a manifest row)
        missing = [c for c in wanted if c not in case.labels]
        if missing and not case.masks:
            raise ValueError(
                f"case {case.case_id} of dataset {case.dataset} declares "
                f"{sorted(case.labels)}, not class {missing[0]!r} {source}"
            )
    modalities = sorted({c.modality for c in cases})
    modality = modalities[0] if len(modalities) == 1 else "mixed"
    return TaskData(classes=wanted, modality=modality, cases=cases)


def as_mask_case(case: Any) -> Any:
    """``case`` with its label file listed as a class mask when it comes from the per-class
    layout (``<class>/<modality>_<dataset>/labelsTr/<case>``, what ``sammed3d prepare``
    writes) and has one class folder only (a scan with several is merged by
    ``one_case_per_image`` and has its masks already): in that layout a missing class file
    means "no such voxel", as in a merged case, not a label map that declares fewer classes.
    """
    if case.masks or len(case.labels) != 1:
        return case
    (name,) = case.labels
    folder = Path(case.label).parent.parent
    if folder.parent.name != name or not _per_class_dataset_folder(folder):
        return case
    return dataclasses.replace(case, masks={name: Path(case.label)})


@functools.lru_cache(maxsize=4096)
def _per_class_dataset_folder(folder: Path) -> bool:
    """Whether ``folder`` is a ``<modality>_<dataset>`` folder of the per-class layout."""
    from sammed3d.data.layouts.per_class import level

    return level(folder) == "dataset"


def declared_classes(cases: list[Any]) -> dict[str, tuple[str, ...]]:
    """The classes each dataset declares, in label-value order (then name).

    A dataset with one label map per case declares its ``dataset.json`` classes in every case;
    for one mask file per class (per-class folders, TotalSegmentator) it is the union of the
    classes its cases have files for: a case without the file of a class has no such voxel.
    """
    values: dict[str, dict[str, int]] = {}
    for case in cases:
        mine = values.setdefault(case.dataset, {})
        for name, value in case.labels.items():
            mine.setdefault(name, value)
    return {
        ds: tuple(n for n, _ in sorted(v.items(), key=lambda kv: (kv[1], kv[0])))
        for ds, v in values.items()
    }


@dataclass(frozen=True)
class SemanticCase:
    """One cached training case.

    Attributes:
        image / label: ``.npy`` arrays of the pre-processing cache (same grid).
        stats: Its ``semantic/*.npz`` (values, counts, voxel positions, z-score statistics).
        lut: Source label value -> output label (0 background), indexed by value.
        class_voxels: Voxels of each output class 1..N (resampled grid).
        mean / std: z-score statistics of the case's voxels > 0.
        pad: Raw intensity of the voxels beyond the image (the case's lowest value).
        case_id / dataset / source_label: Provenance (the label file as given, or the label
            map made of its mask files).
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
    pad: float = 0.0


def _case_stats(label_file: Path, image_file: Path, out: Path, seed: int) -> None:
    """Write the ``semantic/*.npz`` of one cached case (atomic)."""
    from sammed3d.io import atomic_write
    from sammed3d.task.preprocess import padding_intensity, zscore_stats

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
    image = np.load(image_file, mmap_mode="r")
    mean, std = zscore_stats(image)
    arrays["zscore"] = np.array([mean, std], dtype=np.float64)
    arrays["pad"] = np.array(padding_intensity(image, PADDING), dtype=np.float64)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(out, write, suffix=".npz")


def _stats_current(path: Path) -> bool:
    """Whether ``path`` is a ``semantic/*.npz`` of this :data:`SEMANTIC_CACHE_VERSION`."""
    if not path.exists():
        return False
    with np.load(path) as npz:
        return "version" in npz.files and int(npz["version"]) == SEMANTIC_CACHE_VERSION


def build_semantic_cases(
    cfg: TrainingConfig, ctx: Any = None, *, show_progress: bool = True
) -> tuple[list[SemanticCase], TaskData]:
    """Resolve the data, build/reuse the cache, check the labels; every rank calls this.

    Returns:
        ``(cases, data)``: the usable cases (cases whose pre-processing failed are skipped
        with a warning, as in interactive training) and the resolved :class:`TaskData`
        (cases with mask files replaced by their label maps).

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
    drops = prepare_drops(d.roots)  # before the mask cases become label maps
    data = dataclasses.replace(data, cases=build_label_maps(data.cases, cache_dir, ctx))
    params = CacheParams(
        target_spacing=(d.target_spacing[0], d.target_spacing[1], d.target_spacing[2]),
        ct_clamp=None if d.ct_clamp is None else (d.ct_clamp[0], d.ct_clamp[1]),
    )
    entries = []
    root = cache_dir / params.folder_name()
    for case in data.cases:
        img_key, lab_key = _file_key(Path(case.image)), _file_key(Path(case.label))
        entries.append(
            (
                case,
                root / "images" / f"{img_key}.npy",
                root / "labels" / f"{lab_key}__{img_key}.npy",
                root / "stats" / f"{lab_key}__{img_key}.json",
                root / "semantic" / f"{lab_key}__{img_key}.npz",
            )
        )
    # build_cache warns about the cases it fails now; those that failed in an earlier run
    # are only reported by _load_cases (each failure is printed once)
    earlier = {e[3] for e in entries if e[3].exists() and _failed(e[3]) is not None}
    barrier(ctx)  # no rank writes a stats file before every rank has looked
    logger.info("pre-processing cache for %d cases in %s", len(data.cases), cache_dir)
    build_cache(
        iter_targets(data.cases),
        cache_dir,
        params,
        rank=ctx.local_rank,
        world_size=ctx.local_world_size,
        show_progress=show_progress and ctx.is_main,
    )
    barrier(ctx)  # the arrays of every case exist
    mine = entries[ctx.local_rank :: ctx.local_world_size]
    bar = tqdm(mine, desc="class maps", unit="case", disable=not (show_progress and ctx.is_main))
    for _, image, label, stats_file, out in bar:
        if _failed(stats_file) or _stats_current(out):
            continue
        _case_stats(label, image, out, seed=zlib.crc32(out.name.encode()))
    barrier(ctx)
    spacing = "x".join(f"{v:g}" for v in d.target_spacing)
    report = earlier if ctx.is_main else set()
    return _load_cases(entries, data, spacing, report_failed=report, drops=drops), data


#: The option of ``sammed3d prepare`` that sets each cleaning rule's threshold.
PREPARE_RULE_OPTIONS = {
    "min_volume": "--min-volume",
    "min_extent": "--min-extent",
    "max_background": "--max-background",
}


@dataclass(frozen=True)
class PrepareDrops:
    """The masks ``sammed3d prepare`` dropped, from the ``manifest.jsonl`` of the roots.

    Attributes:
        rules: ``(dataset, case, class_name)`` -> the rule that dropped the mask.
        manifests: The manifests read (none: no root is a prepare output).
    """

    rules: dict[tuple[str, str, str], str]
    manifests: tuple[Path, ...] = ()


def prepare_drops(roots: Any) -> PrepareDrops:
    """Read the ``manifest.jsonl`` that ``sammed3d prepare`` wrote next to each per-class
    root (the root, class or dataset folder of its output), leniently: lines that are not
    JSON objects with ``dataset``, ``case``, ``class_name`` and ``status`` are ignored."""
    from sammed3d.data.layouts.per_class import level

    rules: dict[tuple[str, str, str], str] = {}
    manifests: list[Path] = []
    for root in roots:
        root = Path(root)
        up = {"root": 0, "class": 1, "dataset": 2}.get(level(root) or "", None)
        if up is None:
            continue
        manifest = (root.parents[up - 1] if up else root) / "manifest.jsonl"
        if manifest in manifests or not manifest.is_file():
            continue
        manifests.append(manifest)
        try:
            lines = manifest.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict) or rec.get("status") != "dropped":
                continue
            fields = [rec.get(k) for k in ("dataset", "case", "class_name")]
            if not all(isinstance(f, str) for f in fields):
                continue
            dataset, case, name = fields
            rule = str(rec.get("rule") or "unknown")
            rules[(dataset, case, name)] = rule
            if isinstance(rec.get("sequence"), str):  # its output folder ends in the sequence
                rules[(f"{dataset}_{rec['sequence']}", case, name)] = rule
    return PrepareDrops(rules, tuple(manifests))


def _missing_mask_message(
    name: str, missing: list[tuple[str, str]], total: int, drops: PrepareDrops
) -> str:
    """The warning about the cases without a mask file of class ``name``."""
    from collections import Counter

    text = f"class {name!r} has no mask file in {len(missing)} of {total} cases"
    if not drops.manifests:
        return text + " (taken as background there)"
    where = str(drops.manifests[0]) + (
        f" and {len(drops.manifests) - 1} more" if len(drops.manifests) > 1 else ""
    )
    counts = Counter(
        drops.rules[(ds, case, name)] for ds, case in missing if (ds, case, name) in drops.rules
    )
    if not counts:
        return text + f" (taken as background there; {where} records no dropped mask for them)"
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    options = [PREPARE_RULE_OPTIONS[r] for r, _ in ordered if r in PREPARE_RULE_OPTIONS]
    rules = ", ".join(
        f"{n} {r}" + (f" ({PREPARE_RULE_OPTIONS[r]})" if r in PREPARE_RULE_OPTIONS else "")
        for r, n in ordered
    )
    keep = "/".join(options or PREPARE_RULE_OPTIONS.values())
    return (
        text + f": prepare dropped {sum(counts.values())} of them ({rules}; see {where}), so "
        "the structure, though it may be in those images, is trained as background there "
        f"(to keep such masks, re-run sammed3d prepare with looser {keep})"
    )


def build_label_maps(cases: list[Any], cache_dir: Path, ctx: Any) -> list[Any]:
    """``cases`` with each case that stores one mask file per class replaced by a case with
    one label map (``<cache_dir>/label_maps/``, made once; class ``i`` of the case's sorted
    names is value ``i + 1``). Work is shared by the local ranks. A case whose mask files lie
    on different grids is left out with a warning (as the cache leaves out a label map on
    another grid than its image).

    Raises:
        ValueError: a mask file holding another value than 0 and its class's (one line,
            naming the file; raised on every rank).
    """
    from sammed3d.training.distributed import barrier

    jobs = [(i, c, _label_map_path(c, cache_dir)) for i, c in enumerate(cases) if c.masks]
    for _, case, path in jobs[ctx.local_rank :: ctx.local_world_size]:
        if not any(f.exists() for f in _label_map_files(path)):
            _write_label_map(case, path)
    if jobs:
        barrier(ctx)
    out: list[Any] = list(cases)
    for i, case, path in jobs:
        _, error, skip = _label_map_files(path)
        if error.exists():
            raise ValueError(error.read_text(encoding="utf-8").strip())
        if skip.exists():
            if ctx.is_main:
                reason = skip.read_text(encoding="utf-8").strip()
                logger.warning("skipping case %s: %s", case.case_id, reason)
            out[i] = None
            continue
        names = sorted(case.labels)
        out[i] = dataclasses.replace(
            case, label=path, labels={n: k + 1 for k, n in enumerate(names)}, masks={}
        )
    return [c for c in out if c is not None]


def _label_map_path(case: Any, cache_dir: Path) -> Path:
    """Where the label map of a mask case goes: named by the case and its files' identities."""
    import hashlib

    from sammed3d.training.data import _file_key

    ident = "|".join(
        [str(SEMANTIC_CACHE_VERSION), _file_key(Path(case.image))]
        + [f"{n}={case.labels[n]}:{_file_key(Path(case.masks[n]))}" for n in sorted(case.masks)]
    )
    digest = hashlib.sha1(ident.encode()).hexdigest()[:16]
    stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in case.case_id)[:60]
    return cache_dir / "label_maps" / f"{stem}-{digest}.nii.gz"


def _label_map_files(path: Path) -> tuple[Path, Path, Path]:
    """The label map, its error file (bad values: stop) and its skip file (grids differ)."""
    return path, path.with_name(path.name + ".error"), path.with_name(path.name + ".skip")


def _write_label_map(case: Any, path: Path) -> None:
    """Write the label map of ``case`` to ``path``, or its one-line problem next to it."""
    from sammed3d.io import VolumeError, atomic_write_text, write_volume
    from sammed3d.task.labels import class_label_map

    _, error, skip = _label_map_files(path)
    names = sorted(case.labels)
    try:
        volume = class_label_map(case, {n: k + 1 for k, n in enumerate(names)})
    except ValueError as exc:
        message = str(exc).strip().splitlines()[0]
        atomic_write_text(skip if isinstance(exc, VolumeError) else error, message + "\n")
        return
    write_volume(volume, path)


def _failed(stats_file: Path) -> str | None:
    if not stats_file.exists():
        raise FileNotFoundError(f"pre-processing cache has no entry {stats_file}")
    stats = json.loads(stats_file.read_text(encoding="utf-8"))
    return str(stats["error"]) if "error" in stats else None


def _load_cases(
    entries: list[tuple[Any, ...]],
    data: TaskData,
    spacing: str,
    *,
    report_failed: set[Path] | None = None,
    drops: PrepareDrops | None = None,
) -> list[SemanticCase]:
    """The usable cases of ``entries``; ``report_failed``: the stats files of failed cases to
    warn about (the others were reported when they failed); ``drops``: what prepare dropped
    (:func:`prepare_drops`), named in the warning about cases without a class's mask file."""
    classes = data.classes
    out: list[SemanticCase] = []
    no_file: dict[str, list[tuple[str, str]]] = {name: [] for name in classes}
    skipped = 0
    for case, image, label, stats_file, stats in entries:
        error = _failed(stats_file)
        if error is not None:
            if report_failed is None or stats_file in report_failed:
                logger.warning("skipping case %s: %s", case.case_id, error)
            skipped += 1
            continue
        with np.load(stats) as npz:
            values = [int(v) for v in npz["values"]]
            counts = [int(v) for v in npz["counts"]]
            mean, std = (float(v) for v in npz["zscore"])
            shape = tuple(int(s) for s in npz["shape"])
            pad = float(npz["pad"])
        declared = {0, *case.labels.values()}
        undeclared = [v for v in values if v not in declared]
        if undeclared:
            raise ValueError(
                f"{case.label}: label value {undeclared[0]} is not declared in the dataset's "
                f"dataset.json (declared: {sorted(declared)}); fix the label file or declare "
                "the class"
            )
        for name in classes:  # a mask case without the class's file (prepare may drop it)
            if name not in case.labels:
                no_file[name].append((case.dataset, case.case_id))
        lut = [0] * (max(declared) + 1)
        for i, name in enumerate(classes):
            if name in case.labels:  # a mask case may lack a class: no such voxel
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
                pad=pad,
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
        missing = no_file[name]
        if missing:  # one line per class: no mask file (and, if any, empty in more cases)
            empty = lacking - len(missing)
            more = f"; it is empty in {empty} more (taken as background there)" if empty else ""
            logger.warning(
                "warning: %s%s",
                _missing_mask_message(name, missing, len(out), drops or PrepareDrops({})),
                more,
            )
        elif lacking:
            logger.info(
                "class %r is absent from %d of %d cases (taken as background there)",
                name,
                lacking,
                len(out),
            )
    return out


def crop_case(
    image: np.ndarray,
    label: np.ndarray,
    lut: tuple[int, ...] | np.ndarray,
    center: np.ndarray | tuple[float, ...],
    size: int,
    *,
    pad: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Raw image and output-label crops ``(S, S, S)`` of one case around ``center``.

    Args:
        image / label: The case's arrays (same grid).
        lut: Source label value -> output label.
        center: Continuous voxel index of the crop centre.
        size: Crop edge ``S``.
        pad: Image intensity beyond the volume
            (:func:`sammed3d.task.preprocess.padding_intensity`).

    Returns:
        ``(image, label)``: the image crop (float, padded with ``pad``) and the output labels
        (int64; :data:`IGNORE_LABEL` beyond the volume).
    """
    from sammed3d.data.transforms import crop_or_pad

    img, roi = crop_or_pad(image, tuple(center), size=size, pad_value=pad)
    out = np.full(roi.size, IGNORE_LABEL, dtype=np.int64)
    src, dst = roi.overlap(label.shape[-3:])
    out[dst] = np.asarray(lut, dtype=np.int64)[np.asarray(label[src], dtype=np.int64)]
    return img, out


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

    Items: ``image`` ``(1, S, S, S)`` float32, ``label`` ``(1, S, S, S)`` int64 in 0..N
    (:data:`IGNORE_LABEL` beyond the volume), ``seed`` and ``index`` (int64 scalars).
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
        """Normalised image and output-label crops ``(S, S, S)`` around ``center``.

        Beyond the volume the image holds the case's padding intensity and the label
        :data:`IGNORE_LABEL`.
        """
        from sammed3d.task.preprocess import normalise

        case = self.cases[index]
        image = np.load(case.image, mmap_mode="r")
        label = np.load(case.label, mmap_mode="r")
        img, lab = crop_case(image, label, case.lut, center, self.crop_size, pad=case.pad)
        return normalise(img, case.mean, case.std), lab

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
    "IGNORE_LABEL",
    "LOCATIONS_PER_VALUE",
    "PADDING",
    "PREPARE_RULE_OPTIONS",
    "CachedCaseDataset",
    "PrepareDrops",
    "SemanticCase",
    "TaskData",
    "as_mask_case",
    "build_label_maps",
    "build_semantic_cases",
    "build_semantic_dataset",
    "crop_case",
    "declared_classes",
    "prepare_drops",
    "resolve_task_data",
]
