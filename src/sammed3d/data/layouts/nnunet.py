"""nnU-Net v2 / Medical Segmentation Decathlon layout::

root/dataset.json
root/imagesTr/{case}_0000.nii.gz   (nnU-Net v2; the ending is dataset.json's file_ending)
root/imagesTr/{case}.nii.gz        (MSD)
root/labelsTr/{case}.nii.gz        (multi-class label map, values from dataset.json)
root/imagesTs/ + labelsTs/         (held-out split; imagesVal/labelsVal are read too)
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from sammed3d.data.dataset_json import read_dataset_json
from sammed3d.data.layouts.base import (
    Case,
    Discovery,
    LayoutProblem,
    LayoutReader,
    Split,
    files_with_ending,
    strip_ending,
)
from sammed3d.io import VOLUME_SUFFIXES

logger = logging.getLogger(__name__)

#: (images folder, labels folder) pairs per split, in order of preference.
SPLIT_DIRS: dict[str, tuple[tuple[str, str], ...]] = {
    "train": (("imagesTr", "labelsTr"),),
    "test": (("imagesTs", "labelsTs"), ("imagesVal", "labelsVal")),
}
LABEL_DIRS = ("labelsTr", "labelsTs", "labelsVal")
_DATASET_PREFIX = re.compile(r"^(?:Dataset\d{3}|Task\d+)_(?=.)")
_CHANNEL_SUFFIX = re.compile(r"_(\d{4})$")


def dataset_name_from_folder(folder: str | Path) -> str:
    """Dataset name of an nnU-Net folder: ``Dataset003_Liver`` / ``Task03_Liver`` -> ``Liver``."""
    return _DATASET_PREFIX.sub("", Path(folder).name)


def detect(root: Path) -> bool:
    return (root / "dataset.json").is_file()


def discover(root: Path, split: Split) -> Discovery:
    meta = read_dataset_json(root / "dataset.json")
    ending = meta.file_ending
    dataset = dataset_name_from_folder(root)
    pair = choose_split(root, split, ending, required=True)
    if pair is None:  # pragma: no cover - required=True raises instead
        return [], []
    images_dir, labels_dir = root / pair[0], root / pair[1]
    if not images_dir.is_dir():
        raise FileNotFoundError(
            f"{labels_dir} exists but its images folder {images_dir} is missing"
        )
    label_files = files_with_ending(labels_dir, (ending,))
    image_files = files_with_ending(images_dir, (ending,))
    if not label_files:
        raise ValueError(f"no label files ending in {ending!r} in {labels_dir}")
    image_stems = {strip_ending(p.name, ending): p for p in image_files}
    case_split = "train" if pair[1] == "labelsTr" else "test"

    cases: list[Case] = []
    problems: list[LayoutProblem] = []
    used: set[str] = set()
    for label in label_files:
        case_id = strip_ending(label.name, ending)
        image = image_stems.get(f"{case_id}_0000") or image_stems.get(case_id)
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
        cases.append(
            Case(
                case_id,
                image,
                label,
                dict(meta.labels),
                meta.modality,
                dataset,
                split=case_split,
            )
        )
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


def label_dirs_for(split: Split) -> list[str]:
    if split == "auto":
        return [p[1] for p in SPLIT_DIRS["test"] + SPLIT_DIRS["train"]]
    return [p[1] for p in SPLIT_DIRS[split]]


def choose_split(
    root: Path, split: Split, ending: str | None, *, required: bool
) -> tuple[str, str] | None:
    """The (images, labels) folder pair to read for ``split``, or None when optional."""
    endings = (ending,) if ending else VOLUME_SUFFIXES

    def labelled(pair: tuple[str, str]) -> bool:
        return bool(files_with_ending(root / pair[1], endings))

    if split == "auto":
        for pair in SPLIT_DIRS["test"]:
            if labelled(pair):
                return pair
        pair = SPLIT_DIRS["train"][0]
    else:
        candidates = SPLIT_DIRS[split]
        pair = next((p for p in candidates if labelled(p)), candidates[0])
    if labelled(pair):
        return pair
    if not required:
        return None
    tried = SPLIT_DIRS[split] if split != "auto" else (pair,)
    wanted = " or ".join(str(root / p[1]) for p in tried)
    # the split that would read this dataset, when another one has labels
    other = [
        f"{p[1]} (split {name!r}: --split {name})"
        for name, pairs in SPLIT_DIRS.items()
        if name != split
        for p in pairs
        if labelled(p)
    ]
    hint = f"; labelled here: {', '.join(other)}" if other else ""
    if (root / pair[1]).is_dir():
        raise ValueError(f"no label files found in {wanted}{hint}")
    raise FileNotFoundError(f"expected a label folder {wanted} for split {split!r}{hint}")


def _channel_of(stem: str) -> str | None:
    """``"case_0001"`` -> ``"case"`` (nnU-Net channel files), else None."""
    m = _CHANNEL_SUFFIX.search(stem)
    return stem[: m.start()] if m else None


READER = LayoutReader(
    name="nnunet",
    looks_for="dataset.json + imagesTr/labelsTr (nnU-Net v2 / MSD)",
    detect=detect,
    discover=discover,
)
