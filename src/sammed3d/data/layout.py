"""Find the cases of a dataset on disk: nnU-Net v2 / MSD layouts and the published per-class layout.

Two layouts are understood:

(a) **nnU-Net v2 / Medical Segmentation Decathlon**::

        root/dataset.json
        root/imagesTr/{case}_0000.nii.gz   (nnU-Net v2; the ending is dataset.json's file_ending)
        root/imagesTr/{case}.nii.gz        (MSD)
        root/labelsTr/{case}.nii.gz        (multi-class label map, values from dataset.json)
        root/imagesTs/ + labelsTs/         (held-out split; labelsVal/imagesVal are read too)

(b) **the published SAM-Med3D per-class layout** (also what ``sammed3d prepare`` writes)::

        root/<class_name>/<modality>_<dataset>/imagesTr/{case}.nii.gz
        root/<class_name>/<modality>_<dataset>/labelsTr/{case}.nii.gz   (binary, value 1)

    ``root`` may also be one ``<class_name>`` folder or one ``<modality>_<dataset>`` folder.
    The modality comes from the folder prefix (``ct_``, ``mr_``, ``us_``, ...).

Example::

    >>> cases = discover_dataset("nnUNet_raw/Dataset003_Liver", split="train")
    >>> targets = iter_targets(cases)      # one binary target per (case, class)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sammed3d.data.dataset_json import normalise_modality, read_dataset_json
from sammed3d.io import VOLUME_SUFFIXES

logger = logging.getLogger(__name__)

Split = Literal["train", "test", "auto"]

#: (images folder, labels folder) pairs per split, in order of preference.
_SPLIT_DIRS: dict[str, tuple[tuple[str, str], ...]] = {
    "train": (("imagesTr", "labelsTr"),),
    "test": (("imagesTs", "labelsTs"), ("imagesVal", "labelsVal")),
}
_LABEL_DIRS = ("labelsTr", "labelsTs", "labelsVal")
_DATASET_PREFIX = re.compile(r"^(?:Dataset\d{3}|Task\d+)_(?=.)")
_CHANNEL_SUFFIX = re.compile(r"_(\d{4})$")


@dataclass(frozen=True)
class Case:
    """One image with its (multi-class or binary) label file.

    Attributes:
        case_id: Case identifier (the label file name without its ending).
        image: Image file (channel 0 for nnU-Net v2).
        label: Label file.
        labels: Class name -> voxel value in the label file (background excluded).
        modality: ``"CT"``, ``"MR"``, ``"US"``, ... or ``"unknown"``.
        dataset: Dataset name (folder name without ``DatasetXXX_``/``TaskXX_``, or the
            ``<dataset>`` part of a per-class ``<modality>_<dataset>`` folder).
    """

    case_id: str
    image: Path
    label: Path
    labels: dict[str, int]
    modality: str
    dataset: str


@dataclass(frozen=True)
class Target:
    """One binary segmentation target: one class of one case.

    Attributes:
        case_id: Case identifier.
        image: Image file.
        label: Label file.
        label_value: Voxel value of this class in ``label``.
        class_name: Class name as declared by the source.
        modality: ``"CT"``, ``"MR"``, ``"US"``, ... or ``"unknown"``.
        dataset: Dataset name.
    """

    case_id: str
    image: Path
    label: Path
    label_value: int
    class_name: str
    modality: str
    dataset: str


@dataclass(frozen=True)
class LayoutProblem:
    """A case that could not be paired (reported instead of raised in lenient discovery)."""

    dataset: str
    case_id: str
    path: Path
    message: str


def discover_dataset(root: str | Path, split: Split = "auto") -> list[Case]:
    """List the labelled cases of a dataset folder.

    Args:
        root: An nnU-Net v2 / MSD dataset folder (with ``dataset.json``), or a per-class
            root, ``<class>`` folder or ``<modality>_<dataset>`` folder (layout (b)).
        split: ``"train"`` reads ``imagesTr``/``labelsTr``; ``"test"`` reads
            ``imagesTs``/``labelsTs`` (or ``imagesVal``/``labelsVal``); ``"auto"`` takes the
            held-out split when it has label files, else the training split.

    Returns:
        Cases sorted by dataset, class folder and case id (deterministic).

    Raises:
        FileNotFoundError: ``root``, a required label folder, an image or a label is missing
            (the message names the path that was expected).
        ValueError: unknown layout, bad ``split``, invalid ``dataset.json``, or no cases.
    """
    cases, problems = discover_dataset_lenient(root, split)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise FileNotFoundError(f"{first.message}{more}")
    return cases


def iter_targets(cases: Iterable[Case]) -> list[Target]:
    """Expand cases into one :class:`Target` per declared class (ordered by label value).

    Args:
        cases: Cases from :func:`discover_dataset`.

    Returns:
        Targets in case order, then label-value order.
    """
    targets: list[Target] = []
    for case in cases:
        if not isinstance(case, Case):
            raise TypeError(f"iter_targets expects Case objects, got {type(case).__name__}")
        for name, value in sorted(case.labels.items(), key=lambda kv: kv[1]):
            targets.append(
                Target(
                    case_id=case.case_id,
                    image=case.image,
                    label=case.label,
                    label_value=value,
                    class_name=name,
                    modality=case.modality,
                    dataset=case.dataset,
                )
            )
    return targets


def discover_dataset_lenient(
    root: str | Path, split: Split = "auto"
) -> tuple[list[Case], list[LayoutProblem]]:
    """Like :func:`discover_dataset`, but unpaired files are returned as problems, not raised.

    Used by ``sammed3d prepare`` so that one missing image is reported in the manifest and
    does not stop the run. Layout errors (unknown layout, missing label folder, no cases at
    all) still raise.

    Returns:
        ``(cases, problems)``.
    """
    if split not in ("train", "test", "auto"):
        raise ValueError(f"split must be 'train', 'test' or 'auto', got {split!r}")
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    if not root.is_dir():
        raise ValueError(f"expected a dataset folder, got a file: {root}")

    kind = detect_layout(root)
    cases: list[Case] = []
    problems: list[LayoutProblem] = []
    if kind == "nnunet":
        cases, problems = _discover_nnunet(root, split)
    else:
        if kind == "per_class_dataset":
            folders = [(root.parent.name, root)]
        elif kind == "per_class_class":
            folders = [(root.name, d) for d in _dataset_folders(root)]
        else:
            folders = [
                (class_dir.name, d)
                for class_dir in _subdirs(root)
                for d in _dataset_folders(class_dir)
            ]
        explicit = len(folders) == 1
        for class_name, folder in folders:
            c, p = _discover_per_class(folder, class_name, split, required=explicit)
            cases += c
            problems += p
    if not cases and not problems:
        raise ValueError(
            f"no labelled cases found in {root} for split {split!r} "
            f"(expected label files in {' or '.join(_label_dirs_for(split))})"
        )
    cases.sort(key=lambda c: (c.dataset, str(c.label.parent.parent.parent), c.case_id))
    logger.debug("discovered %d cases in %s (%s layout)", len(cases), root, kind)
    return cases, problems


def detect_layout(
    root: str | Path,
) -> Literal["nnunet", "per_class_root", "per_class_class", "per_class_dataset"]:
    """Which layout ``root`` is (see the module docstring).

    Raises:
        ValueError: none of the known layouts, with what was expected.
    """
    root = Path(root)
    if (root / "dataset.json").is_file():
        return "nnunet"
    if _is_dataset_folder(root):
        return "per_class_dataset"
    if _dataset_folders(root):
        return "per_class_class"
    if any(_dataset_folders(d) for d in _subdirs(root)):
        return "per_class_root"
    found = ", ".join(sorted(p.name for p in root.iterdir() if not p.name.startswith(".")))
    raise ValueError(
        f"unknown dataset layout at {root}: expected dataset.json with imagesTr/labelsTr "
        f"(nnU-Net v2 / MSD), or <class>/<modality>_<dataset>/imagesTr+labelsTr (per-class); "
        f"found [{found[:200]}]"
    )


def split_dataset_folder_name(name: str) -> tuple[str, str]:
    """``"ct_AMOS"`` -> ``("CT", "AMOS")``; an unknown prefix gives ``("unknown", name)``."""
    prefix, sep, rest = name.partition("_")
    if sep and rest:
        modality = normalise_modality(prefix)
        if modality != "unknown" or prefix.lower() == "unknown":
            return modality, rest
    return "unknown", name


def dataset_name_from_folder(folder: str | Path) -> str:
    """Dataset name of an nnU-Net folder: ``Dataset003_Liver`` / ``Task03_Liver`` -> ``Liver``."""
    return _DATASET_PREFIX.sub("", Path(folder).name)


# ---------------------------------------------------------------------------------------------
# nnU-Net v2 / MSD


def _discover_nnunet(root: Path, split: Split) -> tuple[list[Case], list[LayoutProblem]]:
    meta = read_dataset_json(root / "dataset.json")
    ending = meta.file_ending
    dataset = dataset_name_from_folder(root)
    pair = _choose_split(root, split, ending, required=True)
    if pair is None:  # pragma: no cover - required=True raises instead
        return [], []
    images_dir, labels_dir = root / pair[0], root / pair[1]
    if not images_dir.is_dir():
        raise FileNotFoundError(
            f"{labels_dir} exists but its images folder {images_dir} is missing"
        )
    label_files = _files_with_ending(labels_dir, (ending,))
    image_files = _files_with_ending(images_dir, (ending,))
    if not label_files:
        raise ValueError(f"no label files ending in {ending!r} in {labels_dir}")
    image_stems = {_strip(p.name, ending): p for p in image_files}

    cases: list[Case] = []
    problems: list[LayoutProblem] = []
    used: set[str] = set()
    for label in label_files:
        case_id = _strip(label.name, ending)
        image = None
        for stem in (f"{case_id}_0000", case_id):
            if stem in image_stems:
                image = image_stems[stem]
                break
        if image is None:
            problems.append(
                LayoutProblem(
                    dataset,
                    case_id,
                    label,
                    f"no image for {label}: expected {images_dir / (case_id + '_0000' + ending)} "
                    f"(nnU-Net v2) or {images_dir / (case_id + ending)} (MSD)",
                )
            )
            continue
        used.add(case_id)
        cases.append(Case(case_id, image, label, dict(meta.labels), meta.modality, dataset))
    for stem, image in sorted(image_stems.items()):
        if stem in used or _channel_of(stem) in used:  # the case itself or its channels
            continue
        case_id = _channel_of(stem) or stem
        problems.append(
            LayoutProblem(
                dataset,
                case_id,
                image,
                f"no label for {image}: expected {labels_dir / (case_id + ending)}",
            )
        )
    if (
        pair[1] == "labelsTr"
        and meta.num_training is not None
        and meta.num_training != len(label_files)
    ):
        logger.warning(
            "%s: dataset.json says numTraining=%d but %s holds %d label files",
            root,
            meta.num_training,
            labels_dir,
            len(label_files),
        )
    return cases, problems


# ---------------------------------------------------------------------------------------------
# per-class layout


def _discover_per_class(
    folder: Path, class_name: str, split: Split, *, required: bool
) -> tuple[list[Case], list[LayoutProblem]]:
    modality, dataset = split_dataset_folder_name(folder.name)
    pair = _choose_split(folder, split, None, required=required)
    if pair is None:
        return [], []
    images_dir, labels_dir = folder / pair[0], folder / pair[1]
    label_files = _files_with_ending(labels_dir, VOLUME_SUFFIXES)
    if not images_dir.is_dir():
        raise FileNotFoundError(
            f"{labels_dir} exists but its images folder {images_dir} is missing"
        )
    image_files = _files_with_ending(images_dir, VOLUME_SUFFIXES)
    images_by_name = {p.name: p for p in image_files}
    cases: list[Case] = []
    problems: list[LayoutProblem] = []
    used: set[str] = set()
    for label in label_files:
        ending = _ending(label.name)
        case_id = label.name[: -len(ending)]
        image = images_by_name.get(case_id + ending) or images_by_name.get(
            f"{case_id}_0000{ending}"
        )
        if image is None:
            problems.append(
                LayoutProblem(
                    dataset,
                    case_id,
                    label,
                    f"no image for {label}: expected {images_dir / (case_id + ending)}",
                )
            )
            continue
        used.add(image.name)
        cases.append(Case(case_id, image, label, {class_name: 1}, modality, dataset))
    for name, image in sorted(images_by_name.items()):
        if name not in used:
            ending = _ending(name)
            case_id = name[: -len(ending)]
            problems.append(
                LayoutProblem(
                    dataset,
                    case_id,
                    image,
                    f"no label for {image}: expected {labels_dir / name}",
                )
            )
    return cases, problems


# ---------------------------------------------------------------------------------------------
# helpers


def _label_dirs_for(split: Split) -> list[str]:
    if split == "auto":
        return [p[1] for p in _SPLIT_DIRS["test"] + _SPLIT_DIRS["train"]]
    return [p[1] for p in _SPLIT_DIRS[split]]


def _choose_split(
    root: Path, split: Split, ending: str | None, *, required: bool
) -> tuple[str, str] | None:
    """The (images, labels) folder pair to read for ``split``, or None when optional."""
    endings = (ending,) if ending else VOLUME_SUFFIXES

    def labelled(pair: tuple[str, str]) -> bool:
        return bool(_files_with_ending(root / pair[1], endings))

    if split == "auto":
        for pair in _SPLIT_DIRS["test"]:
            if labelled(pair):
                return pair
        pair = _SPLIT_DIRS["train"][0]
    else:
        candidates = _SPLIT_DIRS[split]
        pair = next((p for p in candidates if labelled(p)), candidates[0])
    if labelled(pair):
        return pair
    if not required:
        return None
    tried = _SPLIT_DIRS[split] if split != "auto" else (pair,)
    wanted = " or ".join(str(root / p[1]) for p in tried)
    if (root / pair[1]).is_dir():
        raise ValueError(f"no label files found in {wanted}")
    raise FileNotFoundError(f"expected a label folder {wanted} for split {split!r}")


def _is_dataset_folder(path: Path) -> bool:
    return any((path / d).is_dir() for d in _LABEL_DIRS)


def _dataset_folders(path: Path) -> list[Path]:
    return [d for d in _subdirs(path) if _is_dataset_folder(d)]


def _subdirs(path: Path) -> list[Path]:
    return sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))


def _files_with_ending(folder: Path, endings: Iterable[str]) -> list[Path]:
    if not folder.is_dir():
        return []
    endings = tuple(e.lower() for e in endings)
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(endings)
    )


def _ending(name: str) -> str:
    lower = name.lower()
    for suffix in VOLUME_SUFFIXES:
        if lower.endswith(suffix):
            return name[-len(suffix) :]
    return Path(name).suffix


def _strip(name: str, ending: str) -> str:
    return name[: -len(ending)] if name.lower().endswith(ending.lower()) else name


def _channel_of(stem: str) -> str | None:
    """``"case_0001"`` -> ``"case"`` (nnU-Net channel files), else None."""
    m = _CHANNEL_SUFFIX.search(stem)
    return stem[: m.start()] if m else None
