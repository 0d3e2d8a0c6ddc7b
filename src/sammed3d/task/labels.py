"""The ground truth of a case as one label map, whatever its layout stores.

A :class:`~sammed3d.data.layout.Case` keeps its classes either in one multi-class label map
(nnU-Net/MSD, case folders, BIDS, manifest) or in one binary mask file per class
(TotalSegmentator subjects, and the per-class layout that ``sammed3d prepare`` writes, once
:func:`sammed3d.data.layout.one_case_per_image` has merged the class folders of each scan).
Task-model training and scoring read both through :func:`class_label_map`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sammed3d.io import Volume

logger = logging.getLogger(__name__)


def check_declared_values(case: Any) -> None:
    """Raise a one-line ``ValueError`` when a label file of ``case`` holds an undeclared value.

    Every label file of the case is read (its label map, or each mask file).

    Raises:
        ValueError: a value its dataset does not declare (naming the file and the value), or a
            file that is not a label map (``VolumeError``).
    """
    from sammed3d.io import read_volume

    for path, classes in case.label_groups():
        _check_values(read_volume(path), path, classes, per_class=bool(case.masks))


def class_label_map(case: Any, values: Mapping[str, int]) -> Volume:
    """The classes ``values`` (name -> output value) of ``case`` in one label map.

    Each label file of the case that holds one of the classes is read once; voxels of no
    listed class are 0. A voxel in the masks of two classes (never in a label map) gets the
    later class in name order, with a warning.

    Args:
        case: A ``sammed3d.data.layout.Case``.
        values: Output value (>= 1) of each class to keep; names the case lacks are skipped.

    Returns:
        The label map (uint8, or uint16 beyond 255) on the grid of the case's label files.

    Raises:
        ValueError: a label file holding a value its dataset does not declare (one line, naming
            the file); mask files of one case on different grids (``VolumeError``).
    """
    from sammed3d.evaluation.metrics import check_same_grid
    from sammed3d.io import read_volume

    groups = case.label_groups()
    wanted = [(p, c) for p, c in groups if any(n in values for n in c)] or groups[:1]
    dtype = np.uint8 if max(values.values(), default=0) < 256 else np.uint16
    reference: Volume | None = None
    out = np.zeros(0, dtype=dtype)
    for path, classes in wanted:
        volume = read_volume(path)
        _check_values(volume, path, classes, per_class=bool(case.masks))
        if reference is None:
            reference, out = volume, np.zeros(volume.shape, dtype=dtype)
        else:
            check_same_grid(volume, reference, names=(f"mask {path}", f"mask {reference.path}"))
        array = np.asarray(volume.array)
        for name in sorted(n for n in classes if n in values):
            hit = array == classes[name]
            clash = int(np.count_nonzero(out[hit]))
            if clash:
                logger.warning(
                    "case %s: %d voxels are in the masks of two classes; they count as %r",
                    case.case_id,
                    clash,
                    name,
                )
            out[hit] = values[name]
    assert reference is not None  # a case has at least one label file
    return reference.with_array(out)


def _check_values(
    volume: Volume, path: Path, classes: Mapping[str, int], *, per_class: bool
) -> None:
    """Raise ``ValueError`` when ``volume`` (the file ``path``) holds an undeclared value."""
    from sammed3d.evaluation.metrics import check_label_map

    found = check_label_map(volume, "the ground truth")
    declared = set(classes.values())
    undeclared = [int(v) for v in found if int(v) not in declared]
    if not undeclared:
        return
    if per_class:
        (name, value), *_ = classes.items()
        raise ValueError(
            f"{path}: label value {undeclared[0]} in the mask of class {name!r}, which may "
            f"only hold 0 and {value}"
        )
    raise ValueError(
        f"{path}: label value {undeclared[0]} is not declared in the dataset's dataset.json "
        f"(declared: {sorted(declared | {0})})"
    )


__all__ = ["check_declared_values", "class_label_map"]
