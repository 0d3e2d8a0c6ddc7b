"""The types every layout reader returns, the reader interface and small file helpers.

A reader is one module of :mod:`sammed3d.data.layouts` exposing a :class:`LayoutReader`: a
cheap ``detect(root)`` and a ``discover(root, split)`` returning :class:`Case` objects (and
:class:`LayoutProblem` objects for files that could not be paired). Everything downstream
(``prepare``, ``evaluate``, the trainer) works on :class:`Case` / :class:`Target` only.

Nothing here imports torch or reads image data: discovery looks at file names only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sammed3d.io import VOLUME_SUFFIXES

#: The split a caller asks for: ``"auto"`` is the held-out split when the layout has a labelled
#: one, else the training split.
Split = Literal["train", "test", "auto"]
#: The split a case belongs to.
CaseSplit = Literal["train", "test"]


@dataclass(frozen=True)
class Case:
    """One image with its label file(s).

    Attributes:
        case_id: Case identifier, unique within ``dataset``.
        image: Image file (channel 0 for nnU-Net v2).
        label: Multi-class label map; for layouts with one mask file per class
            (TotalSegmentator) the folder that holds the masks.
        labels: Class name as the source declares it -> voxel value (background excluded).
        modality: ``"CT"``, ``"MR"``, ``"US"``, ... or ``"unknown"``.
        dataset: Dataset name. For the images of a multi-sequence case it ends in
            ``_<sequence>`` (``"BraTS2021_flair"``, see :func:`sequence_dataset`), so that
            ``(dataset, case_id)`` names one image, as in the per-class folders ``prepare``
            writes (``mr_BraTS2021_flair``).
        sequence: The MR sequence / channel of ``image`` when a case has several images that
            share one label map (BraTS ``"flair"``, ``"t1ce"``, BIDS ``"T2w"``), else ``None``.
            Each image of such a case is its own :class:`Case`.
        masks: Class name -> binary mask file (value 1) for layouts that store one file per
            class; empty when every class is in ``label``.
        split: ``"train"`` or ``"test"``: which split of the source the case came from.
    """

    case_id: str
    image: Path
    label: Path
    labels: dict[str, int]
    modality: str
    dataset: str
    sequence: str | None = None
    masks: dict[str, Path] = field(default_factory=dict)
    split: CaseSplit = "train"

    def label_file(self, class_name: str) -> Path:
        """The file holding ``class_name`` (its mask, or the label map)."""
        return self.masks.get(class_name, self.label)

    def label_groups(self) -> list[tuple[Path, dict[str, int]]]:
        """``(file, {class: value})`` per label file to read, in label-value/name order."""
        if not self.masks:
            return [(self.label, dict(sorted(self.labels.items(), key=lambda kv: kv[1])))]
        return [(self.masks[name], {name: self.labels[name]}) for name in sorted(self.masks)]


@dataclass(frozen=True)
class Target:
    """One binary segmentation target: one class of one case.

    Attributes:
        case_id: Case identifier.
        image: Image file.
        label: Label file (the mask itself for one-file-per-class layouts).
        label_value: Voxel value of this class in ``label``.
        class_name: Class name as declared by the source.
        modality: ``"CT"``, ``"MR"``, ``"US"``, ... or ``"unknown"``.
        dataset: Dataset name.
        sequence: MR sequence / channel of ``image`` (see :class:`Case`), else ``None``.
        declared_values: Every value the dataset declares for ``label`` (a label map of
            several classes), so that readers can name a value it holds but nobody declared;
            empty for one-file-per-class masks and hand-made targets (nothing is checked).
    """

    case_id: str
    image: Path
    label: Path
    label_value: int
    class_name: str
    modality: str
    dataset: str
    sequence: str | None = None
    declared_values: tuple[int, ...] = ()

    @property
    def category(self) -> str | None:
        """Canonical category of ``class_name`` (:mod:`sammed3d.data.categories`), or
        ``None`` when the name is not in the shipped synonym table."""
        from sammed3d.data.categories import lookup_category

        return lookup_category(self.class_name)


@dataclass(frozen=True)
class LayoutProblem:
    """A case that could not be paired (reported instead of raised in lenient discovery).

    Attributes:
        dataset: Dataset name.
        case_id: The case (as far as it is known).
        path: The file the problem is about.
        message: One line naming what was expected.
        rule: Manifest ``rule`` of ``sammed3d prepare``: ``"missing_file"``,
            ``"duplicate_row"``, ``"bad_row"`` (manifest) or ``"no_label_names"`` (BIDS).
    """

    dataset: str
    case_id: str
    path: Path
    message: str
    rule: str = "missing_file"


Discovery = tuple[list[Case], list[LayoutProblem]]


@dataclass(frozen=True)
class LayoutReader:
    """One dataset layout.

    Attributes:
        name: What ``--layout`` takes (``"nnunet"``, ``"totalsegmentator"``, ...).
        looks_for: What ``detect`` looks for, in a few words (used in error messages).
        detect: ``detect(root) -> bool``: whether ``root`` (a folder, or a file for the
            manifest) is this layout. Cheap: names only, a bounded number of folders.
        discover: ``discover(root, split) -> (cases, problems)``. Raises ``ValueError`` /
            ``FileNotFoundError`` for a root that is not this layout at all.
    """

    name: str
    looks_for: str
    detect: Callable[[Path], bool]
    discover: Callable[[Path, Split], Discovery]


# ---------------------------------------------------------------------------------------------
# helpers shared by the readers

#: How many sub-folders ``detect`` functions look into (detection must stay cheap on roots
#: with thousands of cases).
DETECT_SAMPLE = 16


def subdirs(path: Path) -> list[Path]:
    """Non-hidden sub-folders, sorted."""
    try:
        return sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    except OSError:
        return []


def files_with_ending(folder: Path, endings: Iterable[str] = VOLUME_SUFFIXES) -> list[Path]:
    """Non-hidden files of ``folder`` ending in one of ``endings`` (case-insensitive), sorted."""
    if not folder.is_dir():
        return []
    low = tuple(e.lower() for e in endings)
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(low)
    )


def volume_ending(name: str) -> str:
    """``"a.nii.gz"`` -> ``".nii.gz"``; an unknown ending gives the last suffix."""
    lower = name.lower()
    for suffix in VOLUME_SUFFIXES:
        if lower.endswith(suffix):
            return name[-len(suffix) :]
    return Path(name).suffix


def strip_ending(name: str, ending: str | None = None) -> str:
    """The file name without its volume ending (or without ``ending`` when given)."""
    ending = volume_ending(name) if ending is None else ending
    return name[: -len(ending)] if ending and name.lower().endswith(ending.lower()) else name


def is_volume(path: Path) -> bool:
    return (
        path.is_file()
        and not path.name.startswith(".")
        and path.name.lower().endswith(VOLUME_SUFFIXES)
    )


def wanted_split(split: Split, has_test: bool) -> CaseSplit:
    """The split to read: ``auto`` is ``test`` when the source has labelled test cases."""
    if split == "auto":
        return "test" if has_test else "train"
    return split


def unsplit(split: Split) -> CaseSplit:
    """The split recorded for cases of a layout without split information."""
    return "test" if split == "test" else "train"


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str) -> str:
    """File-name-safe form of a name: ``"Training Batch 1"`` -> ``"Training_Batch_1"``."""
    return _SAFE.sub("_", text.strip()).strip("_") or "dataset"


def sequence_dataset(dataset: str, sequence: str | None) -> str:
    """One sequence's dataset name: ``("BraTS2021", "flair")`` -> ``"BraTS2021_flair"``."""
    return f"{dataset}_{sequence}" if sequence else dataset


def labels_in_order(labels: Mapping[str, int]) -> dict[str, int]:
    return dict(sorted(labels.items(), key=lambda kv: (kv[1], kv[0])))
