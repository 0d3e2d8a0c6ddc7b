"""The published SAM-Med3D per-class layout (also what ``sammed3d prepare`` writes)::

    root/<class_name>/<modality>_<dataset>/imagesTr/{case}.nii.gz
    root/<class_name>/<modality>_<dataset>/labelsTr/{case}.nii.gz   (binary, value 1)

``root`` may also be one ``<class_name>`` folder or one ``<modality>_<dataset>`` folder.
The modality comes from the folder prefix (``ct_``, ``mr_``, ``us_``, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from sammed3d.data.dataset_json import normalise_modality
from sammed3d.data.layouts.base import (
    Case,
    Discovery,
    LayoutProblem,
    LayoutReader,
    Split,
    files_with_ending,
    subdirs,
    volume_ending,
)
from sammed3d.data.layouts.nnunet import LABEL_DIRS, choose_split

Level = Literal["root", "class", "dataset"]


def split_dataset_folder_name(name: str) -> tuple[str, str]:
    """``"ct_AMOS"`` -> ``("CT", "AMOS")``; an unknown prefix gives ``("unknown", name)``."""
    prefix, sep, rest = name.partition("_")
    if sep and rest:
        modality = normalise_modality(prefix)
        if modality != "unknown" or prefix.lower() == "unknown":
            return modality, rest
    return "unknown", name


def level(root: Path) -> Level | None:
    """Which level of the per-class layout ``root`` is, or None.

    A dataset folder has a ``labelsTr``/``labelsTs``/``labelsVal`` folder and no
    ``dataset.json`` (that would be nnU-Net). A class folder holds only dataset folders; a
    root holds only class folders (hidden folders and files are ignored at both levels).
    """
    if _is_dataset_folder(root):
        return "dataset"
    dirs = subdirs(root)
    if dirs and all(_is_dataset_folder(d) for d in dirs):
        return "class"
    if dirs and all(_is_class_folder(d) for d in dirs):
        return "root"
    return None


def detect(root: Path) -> bool:
    return level(root) is not None


def discover(root: Path, split: Split) -> Discovery:
    kind = level(root)
    if kind is None:
        raise ValueError(
            f"{root} is not a per-class folder: expected <class>/<modality>_<dataset>/"
            "imagesTr+labelsTr"
        )
    if kind == "dataset":
        folders = [(root.parent.name, root)]
    elif kind == "class":
        folders = [(root.name, d) for d in subdirs(root)]
    else:
        folders = [(c.name, d) for c in subdirs(root) for d in subdirs(c)]
    explicit = len(folders) == 1
    cases: list[Case] = []
    problems: list[LayoutProblem] = []
    for class_name, folder in folders:
        c, p = _discover_folder(folder, class_name, split, required=explicit)
        cases += c
        problems += p
    return cases, problems


def _discover_folder(folder: Path, class_name: str, split: Split, *, required: bool) -> Discovery:
    modality, dataset = split_dataset_folder_name(folder.name)
    pair = choose_split(folder, split, None, required=required)
    if pair is None:
        return [], []
    images_dir, labels_dir = folder / pair[0], folder / pair[1]
    label_files = files_with_ending(labels_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(
            f"{labels_dir} exists but its images folder {images_dir} is missing"
        )
    images_by_name = {p.name: p for p in files_with_ending(images_dir)}
    case_split = "train" if pair[1] == "labelsTr" else "test"
    cases: list[Case] = []
    problems: list[LayoutProblem] = []
    used: set[str] = set()
    for label in label_files:
        ending = volume_ending(label.name)
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
        cases.append(
            Case(case_id, image, label, {class_name: 1}, modality, dataset, split=case_split)
        )
    for name, image in sorted(images_by_name.items()):
        if name not in used:
            ending = volume_ending(name)
            problems.append(
                LayoutProblem(
                    dataset,
                    name[: -len(ending)],
                    image,
                    f"no label for {image}: expected {labels_dir / name}",
                )
            )
    return cases, problems


def _is_dataset_folder(path: Path) -> bool:
    return any((path / d).is_dir() for d in LABEL_DIRS) and not (path / "dataset.json").exists()


def _is_class_folder(path: Path) -> bool:
    dirs = subdirs(path)
    return bool(dirs) and all(_is_dataset_folder(d) for d in dirs)


READER = LayoutReader(
    name="per-class",
    looks_for="<class>/<modality>_<dataset>/imagesTr+labelsTr (SAM-Med3D per-class)",
    detect=detect,
    discover=discover,
)
