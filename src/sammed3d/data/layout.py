"""Find the labelled cases of a dataset on disk, whatever its layout.

Layouts (one reader module each in :mod:`sammed3d.data.layouts`; ``--layout`` names):

* ``nnunet``: nnU-Net v2 / Medical Segmentation Decathlon (``dataset.json``, ``imagesTr``,
  ``labelsTr``, ``imagesTs``/``labelsTs``).
* ``per-class``: the published SAM-Med3D layout, also what ``sammed3d prepare`` writes
  (``<class>/<modality>_<dataset>/imagesTr+labelsTr``).
* ``totalsegmentator``: ``<subject>/ct.nii.gz`` + ``<subject>/segmentations/<structure>.nii.gz``,
  splits from ``meta.csv``.
* ``case-folders``: KiTS, LiTS and BraTS file-name patterns (several MR sequences per case
  become separate cases).
* ``bids``: BIDS with labels under ``derivatives/`` (VerSe), matched by entity.
* ``manifest``: a CSV (``image,label,modality,labels``) for anything else.

Detection is automatic when exactly one layout matches the folder; when none does, each
sub-folder that matches exactly one layout is read (a root holding datasets of different
layouts). Two layouts matching one folder, or none anywhere, is a one-line ``ValueError``
(the first asks for ``layout=``/``--layout``, the second lists what was looked for and points
at the manifest).

Example::

    >>> cases = discover_dataset("nnUNet_raw/Dataset003_Liver", split="train")
    >>> targets = iter_targets(cases)      # one binary target per (case, class)
    >>> targets[0].class_name, targets[0].category
    ('Liver', 'liver')
"""

from __future__ import annotations

import filecmp
import logging
import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np

from sammed3d.data.layouts import LAYOUT_NAMES, READERS, get_reader
from sammed3d.data.layouts.base import Case, LayoutProblem, LayoutReader, Split, Target, subdirs
from sammed3d.data.layouts.nnunet import dataset_name_from_folder
from sammed3d.data.layouts.per_class import split_dataset_folder_name

__all__ = [
    "LAYOUT_NAMES",
    "Case",
    "LayoutProblem",
    "Split",
    "Target",
    "check_results_folder",
    "dataset_name_from_folder",
    "detect_layout",
    "discover_dataset",
    "discover_dataset_lenient",
    "find_datasets",
    "iter_targets",
    "one_case_per_image",
    "split_dataset_folder_name",
    "undeclared_values",
]

logger = logging.getLogger(__name__)

#: Where the manifest format is described (quoted by the unknown-layout error).
MANIFEST_DOC = "docs/data.md, section 'Manifest'"


def discover_dataset(
    root: str | Path, split: Split = "auto", layout: str | None = None
) -> list[Case]:
    """List the labelled cases of a dataset folder (or manifest file).

    Args:
        root: A dataset folder of any known layout, a folder holding such folders, or a
            manifest ``.csv``.
        split: ``"train"``, ``"test"`` (``imagesTs``/``labelsTs``, ``imagesVal``/``labelsVal``,
            TotalSegmentator's ``test`` subjects, manifest rows with ``split=test``) or
            ``"auto"``: the held-out split when the source has a labelled one, else training.
            Layouts without split information return all cases.
        layout: Force one layout (a name of :data:`LAYOUT_NAMES`) instead of detecting it.

    Returns:
        Cases sorted by dataset, case id, sequence and label file (deterministic).

    Raises:
        FileNotFoundError: ``root``, a required folder, an image or a label is missing (the
            message names the path that was expected).
        ValueError: unknown or ambiguous layout, bad ``split``/``layout``, invalid metadata,
            or no cases.
    """
    cases, problems = discover_dataset_lenient(root, split, layout)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise FileNotFoundError(f"{first.message}{more}")
    return cases


def discover_dataset_lenient(
    root: str | Path, split: Split = "auto", layout: str | None = None
) -> tuple[list[Case], list[LayoutProblem]]:
    """Like :func:`discover_dataset`, but cases that cannot be paired are returned as problems.

    Used by ``sammed3d prepare`` so that one missing image or one bad manifest row is
    reported and does not stop the run. Layout errors (unknown layout, missing label folder,
    no cases at all) still raise.

    Returns:
        ``(cases, problems)``.
    """
    if split not in ("train", "test", "auto"):
        raise ValueError(f"split must be 'train', 'test' or 'auto', got {split!r}")
    root = Path(root)
    cases: list[Case] = []
    problems: list[LayoutProblem] = []
    plan = find_datasets(root, layout)
    for reader, folder in plan:
        c, p = reader.discover(folder, split)
        logger.debug("%s: %d cases, %d problems (%s layout)", folder, len(c), len(p), reader.name)
        cases += c
        problems += p
    if not cases and not problems:
        names = ", ".join(sorted({r.name for r, _ in plan}))
        raise ValueError(f"no labelled cases found in {root} for split {split!r} ({names} layout)")
    cases.sort(key=lambda c: (c.dataset, c.case_id, c.sequence or "", str(c.label)))
    return cases, problems


def find_datasets(root: str | Path, layout: str | None = None) -> list[tuple[LayoutReader, Path]]:
    """Which reader reads which folder under ``root``.

    Returns:
        ``[(reader, folder)]``: ``root`` itself when ``layout`` is given or exactly one layout
        matches it, else every sub-folder that exactly one layout matches.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: an unknown ``layout`` name; a folder that several layouts match; nothing
            recognised (the message lists what was looked for and points at the manifest).
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    if layout is not None:
        return [(get_reader(layout), root)]
    if root.is_file() and root.suffix.lower() != ".csv":
        raise ValueError(
            f"expected a dataset folder or a manifest .csv, got the file {root} "
            f"(manifest format: {MANIFEST_DOC})"
        )
    matches = _matching(root)
    if len(matches) == 1:
        return [(matches[0], root)]
    if len(matches) > 1:
        raise ValueError(_ambiguous(root, matches))
    plan: list[tuple[LayoutReader, Path]] = []
    for folder in subdirs(root) if root.is_dir() else []:
        found = _matching(folder)
        if len(found) > 1:
            raise ValueError(_ambiguous(folder, found))
        if found:
            plan.append((found[0], folder))
    if plan:
        logger.info(
            "%s holds %d datasets: %s",
            root,
            len(plan),
            ", ".join(f"{f.name} ({r.name})" for r, f in plan),
        )
        return plan
    listing = _short_listing(sorted(p.name for p in root.iterdir() if not p.name.startswith(".")))
    wanted = "; ".join(r.looks_for for r in READERS)
    raise ValueError(
        f"unknown dataset layout at {root} (found [{listing}]): looked for {wanted}, "
        f"in the folder and one level down; for any other dataset write a manifest CSV "
        f"({MANIFEST_DOC})"
    )


def detect_layout(root: str | Path) -> str:
    """The name of the one layout that matches ``root`` (see :data:`LAYOUT_NAMES`).

    Raises:
        ValueError: none or several match (sub-folders are not looked at).
    """
    root = Path(root)
    matches = _matching(root)
    if len(matches) == 1:
        return matches[0].name
    if matches:
        raise ValueError(_ambiguous(root, matches))
    wanted = "; ".join(r.looks_for for r in READERS)
    raise ValueError(f"unknown dataset layout at {root}: looked for {wanted}")


def undeclared_values(array: np.ndarray, declared: Iterable[int]) -> list[int]:
    """The non-zero values of a label map that are not in ``declared``, ascending.

    Integer maps of values in [0, 65535] are counted with ``np.bincount`` (one pass);
    others with ``np.unique``.
    """
    a = np.asarray(array)
    if a.dtype == np.bool_:
        present = [1] if a.any() else []
    elif np.issubdtype(a.dtype, np.integer) and a.size and a.min() >= 0 and a.max() < 2**16:
        present = np.flatnonzero(np.bincount(a.ravel())).tolist()
    else:
        present = [int(v) for v in np.unique(a) if float(v).is_integer()]
    known = {int(v) for v in declared} | {0}
    return sorted(int(v) for v in present if int(v) not in known)


def iter_targets(cases: Iterable[Case]) -> list[Target]:
    """Expand cases into one :class:`Target` per declared class (ordered by label value).

    Args:
        cases: Cases from :func:`discover_dataset`.

    Returns:
        Targets in case order, then label-value order (then name, for one-file-per-class
        layouts where every value is 1).
    """
    targets: list[Target] = []
    for case in cases:
        if not isinstance(case, Case):
            raise TypeError(f"iter_targets expects Case objects, got {type(case).__name__}")
        declared = () if case.masks else tuple(sorted(set(case.labels.values())))
        for name, value in sorted(case.labels.items(), key=lambda kv: (kv[1], kv[0])):
            targets.append(
                Target(
                    case_id=case.case_id,
                    image=case.image,
                    label=case.label_file(name),
                    label_value=value,
                    class_name=name,
                    modality=case.modality,
                    dataset=case.dataset,
                    sequence=case.sequence,
                    declared_values=declared,
                )
            )
    return targets


def check_results_folder(
    output: str | os.PathLike[str],
    data: Iterable[Case | Target],
    root: str | os.PathLike[str] | None = None,
) -> None:
    """Refuse an output folder that is part of the dataset it scores: results (CSV, JSON,
    plots, predicted label maps) written there would lie among the images and labels.

    Refused: ``root`` itself (the dataset folder, when given), a folder that holds an image
    or label file of ``data`` (``imagesTr``, a case folder, a DICOM series folder), every
    folder inside those (made or yet to be made: ``imagesTr/eval``) and every folder between
    ``root`` and those; a folder beside them (``<root>/results``) is fine.

    Raises:
        ValueError: one line naming the folder and what of the dataset it holds.
    """
    out = Path(output)
    here = os.path.realpath(out)  # also for a folder yet to be made: its made part resolved
    top = os.path.realpath(root) if root is not None and os.path.isdir(root) else None
    expected = f"output: expected a folder of its own for the results, got {output}"
    if here == top:
        raise ValueError(f"{expected}, the dataset folder itself")
    holders: dict[str, dict[str, str]] = {}  # folder -> kind ("images", "labels") -> a file
    for item in data:
        files = [("images", item.image), ("labels", item.label)]
        files += [("labels", m) for m in getattr(item, "masks", {}).values()]
        for kind, path in files:
            text = os.path.abspath(path)
            if text == here or os.path.abspath(out) == text:  # a DICOM series folder, ...
                raise ValueError(f"{expected}, which is the dataset's {kind[:-1]} {path}")
            holders.setdefault(os.path.dirname(text), {}).setdefault(kind, text)
    for folder, held in holders.items():
        real = os.path.realpath(folder)
        what = " and ".join(held)
        example = os.path.basename(next(iter(held.values())))
        if real == here:
            raise ValueError(f"{expected}, which holds the dataset's {what} (e.g. {example})")
        if here.startswith(real + os.sep):
            raise ValueError(
                f"{expected}, inside {folder}, which holds the dataset's {what} (e.g. {example})"
            )
        if top is not None and real.startswith(here + os.sep) and here.startswith(top + os.sep):
            below = os.path.relpath(real, here)
            raise ValueError(f"{expected}, a folder of the dataset (its {what} are in {below})")


def one_case_per_image(cases: Iterable[Case]) -> list[Case]:
    """Merge the cases that are one scan seen from several class folders.

    The per-class layout repeats each scan under every class folder
    (``liver/ct_AMOS/imagesTr/a.nii.gz`` and ``kidney/ct_AMOS/imagesTr/a.nii.gz``, hard links
    or copies), with one binary label per folder, so discovery returns one case per (scan,
    class). Whatever works per image (predicting a whole volume) wants one case per scan:
    cases with one class in one file, the same dataset, case id, sequence and split, and the
    same image content become one case whose ``masks`` name each class's label file (the
    form of TotalSegmentator subjects; ``image`` and ``label`` are the first case's). Images
    that differ stay separate cases, as does every other case.

    Args:
        cases: Cases from :func:`discover_dataset`.

    Returns:
        The cases in their first appearance's order.
    """
    merged: list[Case] = []
    groups: dict[tuple[str, str, str | None, str], list[int]] = {}
    for case in cases:
        if not isinstance(case, Case):
            raise TypeError(f"one_case_per_image expects Case objects, got {type(case).__name__}")
        if case.masks or len(case.labels) != 1:
            merged.append(case)
            continue
        key = (case.dataset, case.case_id, case.sequence, case.split)
        for i in groups.setdefault(key, []):
            if _can_join(merged[i], case):
                merged[i] = _joined(merged[i], case)
                break
        else:
            groups[key].append(len(merged))
            merged.append(case)
    return merged


def _can_join(group: Case, case: Case) -> bool:
    """Whether ``case`` (one class in one file) is another class of ``group``'s scan."""
    (name,) = case.labels
    return name not in group.labels and _same_content(group.image, case.image)


def _joined(group: Case, case: Case) -> Case:
    """``group`` with ``case``'s class added as a mask file."""
    masks = dict(group.masks) or {n: group.label for n in group.labels}
    labels = {**group.labels, **case.labels}  # the value of each class in its own file
    (name,) = case.labels
    masks[name] = case.label
    return replace(
        group,
        labels={n: labels[n] for n in sorted(labels)},
        masks={n: masks[n] for n in sorted(masks)},
    )


def _same_content(a: Path, b: Path) -> bool:
    """Same file (a hard link) or the same bytes."""
    try:
        return os.path.samefile(a, b) or filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def _matching(root: Path) -> list[LayoutReader]:
    return [r for r in READERS if r.detect(root)]


def _short_listing(names: list[str], width: int = 160) -> str:
    """``names`` joined by commas, cut between whole names to about ``width`` characters
    (at least one name), with how many more there are: ``a.nii.gz, b.nii.gz, ... and 12 more``.
    """
    shown: list[str] = []
    length = 0
    for name in names:
        extra = len(name) + (2 if shown else 0)
        if shown and length + extra > width:
            break
        shown.append(name)
        length += extra
    rest = len(names) - len(shown)
    return ", ".join(shown) + (f", ... and {rest} more" if rest else "")


def _ambiguous(root: Path, readers: list[LayoutReader]) -> str:
    names = " and ".join(r.name for r in readers)
    return (
        f"{root} looks like several layouts ({names}); choose one with --layout NAME "
        "(layout= in Python)"
    )
