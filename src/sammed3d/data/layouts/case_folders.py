"""Case folders: per-case image(s) and one multi-class label map, named by a pattern.

Known datasets (one :class:`Profile` each; the label names are the datasets' documented ones)::

    KiTS19/21/23   root/case_00000/imaging.nii.gz + segmentation.nii.gz
                   (KiTS21: aggregated_MAJ_seg.nii.gz); 1 kidney, 2 tumor, 3 cyst (CT)
    LiTS           root/volume-0.nii + segmentation-0.nii (also one folder deeper, as in
                   "Training Batch 1/"); 1 liver, 2 tumor (CT)
    BraTS 2018-21  root/BraTS2021_00000/BraTS2021_00000_{flair,t1,t1ce,t2}.nii.gz + ..._seg.nii.gz;
                   1 necrotic tumour core, 2 peritumoral edema, 4 enhancing tumour (MR)
    BraTS 2023+    root/BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t1c,t1n,t2f,t2w}.nii.gz + -seg;
                   1 non-enhancing tumour core, 2 surrounding FLAIR hyperintensity,
                   3 enhancing tissue (MR)

Several images of one case (the MR sequences of BraTS) become separate cases that share the
label map, with ``sequence`` set and the dataset named per sequence (``BraTS2021_flair``).
A case folder with images but no label file is an
unlabelled (test) case and is skipped with a log line; a label without an image is a problem.
Other datasets of this kind are read through a manifest (:mod:`.manifest`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sammed3d.data.layouts.base import (
    DETECT_SAMPLE,
    Case,
    Discovery,
    LayoutProblem,
    LayoutReader,
    Split,
    sequence_dataset,
    subdirs,
    unsplit,
)

logger = logging.getLogger(__name__)

_EXT = r"(?P<ext>\.nii(?:\.gz)?)"


@dataclass(frozen=True)
class Profile:
    """File-name pattern of one dataset family.

    Attributes:
        name: Short name (``"kits"``).
        image: Regular expression matched against an image file's path relative to the root
            (``/``-separated, at most one folder deep). Named groups: ``case`` (the case id),
            ``ext``, optionally ``seq`` (the MR sequence), ``ds`` and any others the label
            templates use.
        labels: Label file templates relative to the image's folder, tried in order;
            ``str.format`` fields are the groups of ``image``.
        label_file: Regular expression of a label file of this family (relative path), used
            to report a label whose images are missing; same groups as ``image``.
        expected_image: What is expected next to such a label (format fields: its groups).
        label_names: Class name -> voxel value.
        modality: Canonical modality of the images.
        dataset: Dataset name, or ``None`` to take the ``ds`` group.
    """

    name: str
    image: re.Pattern[str]
    labels: tuple[str, ...]
    label_file: re.Pattern[str]
    expected_image: str
    label_names: dict[str, int]
    modality: str
    dataset: str | None = None

    def dataset_of(self, groups: dict[str, str]) -> str:
        return self.dataset or groups.get("ds") or self.name


_BRATS = r"(?P<case>(?P<ds>[Bb]ra[Tt][Ss][^/_]*)_[^/]+)"
_BRATS23 = r"(?P<case>(?P<ds>BraTS-[A-Za-z]+)-[^/]+)"

PROFILES: tuple[Profile, ...] = (
    Profile(
        name="kits",
        image=re.compile(rf"(?P<case>case_\d{{5}})/imaging{_EXT}"),
        labels=("segmentation{ext}", "aggregated_MAJ_seg{ext}"),
        label_file=re.compile(rf"(?P<case>case_\d{{5}})/(?:segmentation|aggregated_MAJ_seg){_EXT}"),
        expected_image="imaging{ext}",
        label_names={"kidney": 1, "kidney tumor": 2, "kidney cyst": 3},
        modality="CT",
        dataset="KiTS",
    ),
    Profile(
        name="lits",
        image=re.compile(rf"(?:[^/]+/)?(?P<case>volume-(?P<n>\d+)){_EXT}"),
        labels=("segmentation-{n}{ext}",),
        label_file=re.compile(rf"(?:[^/]+/)?segmentation-(?P<n>\d+){_EXT}"),
        expected_image="volume-{n}{ext}",
        label_names={"liver": 1, "liver tumor": 2},
        modality="CT",
        dataset="LiTS",
    ),
    Profile(
        name="brats",
        image=re.compile(rf"{_BRATS}/(?P=case)_(?P<seq>flair|t1ce|t1|t2){_EXT}"),
        labels=("{case}_seg{ext}",),
        label_file=re.compile(rf"{_BRATS}/(?P=case)_seg{_EXT}"),
        expected_image="{case}_{{flair,t1,t1ce,t2}}{ext}",
        label_names={
            "necrotic tumor core": 1,
            "peritumoral edema": 2,
            "enhancing tumor": 4,
        },
        modality="MR",
    ),
    Profile(
        name="brats2023",
        image=re.compile(rf"{_BRATS23}/(?P=case)-(?P<seq>t1c|t1n|t2f|t2w){_EXT}"),
        labels=("{case}-seg{ext}",),
        label_file=re.compile(rf"{_BRATS23}/(?P=case)-seg{_EXT}"),
        expected_image="{case}-{{t1c,t1n,t2f,t2w}}{ext}",
        label_names={
            "non-enhancing tumor core": 1,
            "surrounding non-enhancing FLAIR hyperintensity": 2,
            "enhancing tissue": 3,
        },
        modality="MR",
    ),
)


def detect(root: Path) -> bool:
    return any(_match(rel)[0] is not None for rel in _candidates(root, limit=DETECT_SAMPLE))


def discover(root: Path, split: Split) -> Discovery:
    cases: list[Case] = []
    problems: list[LayoutProblem] = []
    unlabelled: list[Path] = []
    labelled: set[tuple[str, Path, str]] = set()  # (profile, folder, case key) with an image
    files = list(_candidates(root))
    for rel in files:
        profile, m = _match(rel)
        if profile is None or m is None:
            continue
        groups = {k: v for k, v in m.groupdict().items() if v is not None}
        image = root / rel
        tried = [image.parent / t.format(**groups) for t in profile.labels]
        label = next((p for p in tried if p.is_file()), None)
        if label is None:
            unlabelled.append(image)
            continue
        labelled.add((profile.name, image.parent, _case_key(groups)))
        cases.append(
            Case(
                groups["case"],
                image,
                label,
                dict(profile.label_names),
                profile.modality,
                sequence_dataset(profile.dataset_of(groups), groups.get("seq")),
                sequence=groups.get("seq"),
                split=unsplit(split),
            )
        )
    for rel in files:  # label maps whose images are missing
        path = root / rel
        for profile in PROFILES:
            m = profile.label_file.fullmatch(rel)
            if m:
                groups = {k: v for k, v in m.groupdict().items() if v is not None}
                if (profile.name, path.parent, _case_key(groups)) in labelled:
                    break
                expected = path.parent / profile.expected_image.format(**groups)
                problems.append(
                    LayoutProblem(
                        profile.dataset_of(groups),
                        groups.get("case") or path.parent.name,
                        path,
                        f"no image for {path}: expected {expected}",
                    )
                )
                break
    if unlabelled:
        logger.info(
            "%s: %d image(s) without a label file skipped as unlabelled (e.g. %s)",
            root,
            len(unlabelled),
            unlabelled[0],
        )
    if not cases and not problems:
        raise ValueError(
            f"no labelled cases in {root}: expected case folders of KiTS "
            "(case_00000/imaging.nii.gz + segmentation.nii.gz), LiTS (volume-0.nii + "
            "segmentation-0.nii) or BraTS (<case>/<case>_t1.nii.gz + <case>_seg.nii.gz)"
        )
    return cases, problems


def _case_key(groups: dict[str, str]) -> str:
    """What ties an image to its label file within a folder (LiTS: the number)."""
    return groups.get("n") or groups["case"]


def _match(rel: str) -> tuple[Profile | None, re.Match[str] | None]:
    for profile in PROFILES:
        m = profile.image.fullmatch(rel)
        if m:
            return profile, m
    return None, None


def _candidates(root: Path, limit: int | None = None) -> Iterator[str]:
    """File paths relative to ``root``, at most one folder deep (``limit`` folders looked at)."""
    try:
        entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    except OSError:
        return
    for p in entries:
        if p.is_file():
            yield p.name
    for d in subdirs(root)[:limit]:
        for p in sorted(d.iterdir()):
            if p.is_file() and not p.name.startswith("."):
                yield f"{d.name}/{p.name}"


READER = LayoutReader(
    name="case-folders",
    looks_for="KiTS/LiTS/BraTS case folders (case_00000/imaging.nii.gz, volume-0.nii, "
    "<case>/<case>_t1.nii.gz)",
    detect=detect,
    discover=discover,
)
