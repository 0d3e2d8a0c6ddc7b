"""TotalSegmentator layout: one folder per subject, one binary mask file per structure::

    root/meta.csv                              (optional; image_id;...;split;... with
                                                split train / val / test, ';'-separated)
    root/s0000/ct.nii.gz                       (mri.nii.gz for the MR dataset)
    root/s0000/segmentations/liver.nii.gz      (file name = structure name, values 0/1)
    root/s0000/segmentations/kidney_left.nii.gz
    ...

``root`` may also be a single subject folder. Splits come from ``meta.csv``: ``train`` reads
the ``train`` and ``val`` subjects (our trainer has no tuning split), ``test`` the ``test``
subjects; without ``meta.csv`` every subject belongs to whatever split is asked for. Each
subject is one :class:`~sammed3d.data.layouts.base.Case` whose ``masks`` name the mask files.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

from sammed3d.data.layouts.base import (
    DETECT_SAMPLE,
    Case,
    CaseSplit,
    Discovery,
    LayoutProblem,
    LayoutReader,
    Split,
    files_with_ending,
    safe_name,
    strip_ending,
    subdirs,
    unsplit,
    wanted_split,
)

logger = logging.getLogger(__name__)

MASKS_DIR = "segmentations"
META_FILE = "meta.csv"
#: Image file names of a subject, in order of preference, with their modality.
IMAGE_NAMES = (("ct.nii.gz", "CT"), ("ct.nii", "CT"), ("mri.nii.gz", "MR"), ("mri.nii", "MR"))
_META_SPLITS: dict[str, CaseSplit] = {"train": "train", "val": "train", "test": "test"}


def detect(root: Path) -> bool:
    """A subject folder (``segmentations/`` and ``ct.nii.gz``/``mri.nii.gz``), or a folder with
    one among its first sub-folders. KiTS21 case folders also hold ``segmentations/`` but
    their image is ``imaging.nii.gz``, so they do not match."""
    if _is_subject(root) and _image_of(root)[0] is not None:
        return True
    return any(
        _is_subject(d) and _image_of(d)[0] is not None for d in subdirs(root)[:DETECT_SAMPLE]
    )


def discover(root: Path, split: Split) -> Discovery:
    if _is_subject(root):
        subjects, dataset, meta = [root], safe_name(root.parent.name), {}
    else:
        subjects = [d for d in subdirs(root) if _is_subject(d) or _image_of(d)[0] is not None]
        dataset, meta = safe_name(root.name), read_meta(root / META_FILE)
        if not subjects:
            raise ValueError(f"no TotalSegmentator subject folders (s0000/{MASKS_DIR}/) in {root}")
    if meta:
        unknown = sorted(s.name for s in subjects if s.name not in meta)
        if unknown:
            logger.warning(
                "%s: %d subject(s) are not in %s (e.g. %s); they count as training subjects",
                root,
                len(unknown),
                META_FILE,
                unknown[0],
            )
        want = wanted_split(split, has_test="test" in meta.values())
    else:
        want = unsplit(split)

    cases: list[Case] = []
    problems: list[LayoutProblem] = []
    for subject in subjects:
        if meta and meta.get(subject.name, "train") != want:
            continue
        image, modality = _image_of(subject)
        masks_dir = subject / MASKS_DIR
        masks = {strip_ending(p.name): p for p in files_with_ending(masks_dir)}
        names = " or ".join(n for n, _ in IMAGE_NAMES[::2])
        if image is None:
            problems.append(
                LayoutProblem(
                    dataset,
                    subject.name,
                    masks_dir,
                    f"no image for {masks_dir}: expected {subject}/{names}",
                )
            )
        elif not masks:
            problems.append(
                LayoutProblem(
                    dataset,
                    subject.name,
                    image,
                    f"no label for {image}: expected mask files in {masks_dir}",
                )
            )
        else:
            cases.append(
                Case(
                    subject.name,
                    image,
                    masks_dir,
                    {name: 1 for name in sorted(masks)},
                    modality,
                    dataset,
                    masks=dict(sorted(masks.items())),
                    split=want,
                )
            )
    return cases, problems


def read_meta(path: Path) -> dict[str, CaseSplit]:
    """``image_id`` -> split from a TotalSegmentator ``meta.csv`` (empty when absent).

    Raises:
        ValueError: the file has no ``image_id``/``split`` columns or an unknown split value.
    """
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8-sig")
    first = text.splitlines()[0] if text else ""
    reader = csv.DictReader(io.StringIO(text), delimiter=";" if ";" in first else ",")
    fields = [f.strip() for f in reader.fieldnames or []]
    if "image_id" not in fields or "split" not in fields:
        raise ValueError(
            f"{path}: expected the columns image_id and split (TotalSegmentator meta.csv), "
            f"got {fields}"
        )
    out: dict[str, CaseSplit] = {}
    for n, row in enumerate(reader, 2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        value = row["split"].lower()
        if value not in _META_SPLITS:
            raise ValueError(f"{path} line {n}: split {row['split']!r} is not train, val or test")
        out[row["image_id"]] = _META_SPLITS[value]
    return out


def _is_subject(path: Path) -> bool:
    return (path / MASKS_DIR).is_dir()


def _image_of(subject: Path) -> tuple[Path | None, str]:
    for name, modality in IMAGE_NAMES:
        if (subject / name).is_file():
            return subject / name, modality
    return None, "unknown"


READER = LayoutReader(
    name="totalsegmentator",
    looks_for="<subject>/ct.nii.gz + <subject>/segmentations/<structure>.nii.gz (TotalSegmentator)",
    detect=detect,
    discover=discover,
)
