"""Input checks for inference: is this file / array a usable intensity volume?

Files are read with :func:`sammed3d.io.read_volume`, which already refuses truncated or
corrupt files, NaN/Inf voxels, implausible voxel sizes and irregular DICOM series;
:func:`check_image_array` then checks that the voxels make an intensity image (not constant,
not a label map).
"""

from __future__ import annotations

import logging
import os

import numpy as np

from sammed3d.io import IrregularSlices, Volume, VolumeError, read_volume

logger = logging.getLogger(__name__)

#: Most distinct values an intensity image may have before it is taken for a label map or mask
#: (a segmentation passed as the image), when none is negative; integer or float voxels alike
#: (a mask stored as floats, e.g. 0, 0.999 and 1, is no scan either).
LABEL_LIKE_MAX_VALUES = 32


def load_image(
    path: str | os.PathLike[str],
    *,
    allow_label_like: bool = False,
    irregular_slices: IrregularSlices = "error",
) -> Volume:
    """Read an intensity volume and reject unusable ones with a one-line reason.

    Args:
        path: Image file or DICOM series folder.
        allow_label_like: Accept an image with only a few distinct values.
        irregular_slices: See :func:`sammed3d.io.read_volume`.

    Raises:
        FileNotFoundError: no such path.
        VolumeError: unsupported/unreadable/truncated file, not 3-D, several DICOM series or an
            irregular one, NaN/Inf, implausible spacing, constant or label-like voxels.
    """
    volume = read_volume(path, irregular_slices=irregular_slices)
    check_image_array(volume.array, allow_label_like=allow_label_like, name=str(path))
    return volume


def check_image_array(
    array: np.ndarray, *, allow_label_like: bool = False, name: str = "image"
) -> None:
    """Raise :class:`~sammed3d.io.VolumeError` if ``array`` is not a usable intensity volume.

    Checks: 3-D with at least 2 voxels per axis; a real numeric dtype; no NaN/Inf; not
    constant; and (unless ``allow_label_like``) not a label map, i.e. not at most
    :data:`LABEL_LIKE_MAX_VALUES` distinct non-negative values, whatever the dtype (judged on
    a sample of about a million voxels).
    """
    if array.ndim != 3:
        raise VolumeError(f"{name}: expected a 3-D volume, got an array of shape {array.shape}")
    if min(array.shape) < 2:
        raise VolumeError(
            f"{name}: expected a 3-D volume with at least 2 voxels per axis, got {array.shape}"
        )
    if array.dtype == np.bool_:
        raise VolumeError(f"{name}: got a boolean array; that is a mask, not an intensity image")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise VolumeError(f"{name}: unsupported voxel type {array.dtype}; expected ints or floats")
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            n_nan = int(np.isnan(array).sum())
            n_inf = int(array.size - finite.sum()) - n_nan
            raise VolumeError(
                f"{name}: has {n_nan} NaN and {n_inf} infinite voxel(s); fix or mask them first"
            )
    lo, hi = array.min(), array.max()
    if lo == hi:
        raise VolumeError(f"{name}: is constant (every voxel is {lo}); nothing to segment")
    if allow_label_like:
        return
    step = max(1, array.size // 1_000_000)
    values = np.unique(array.reshape(-1)[::step])
    if len(values) <= LABEL_LIKE_MAX_VALUES and values[0] >= 0:
        whole = np.issubdtype(values.dtype, np.integer) or bool(np.all(np.mod(values, 1) == 0))
        shown = ", ".join(_show(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")
        raise VolumeError(
            f"{name}: looks like a label map (only {len(values)} distinct "
            f"{'integer ' if whole else ''}values: {shown}); pass the intensity image, "
            "not a segmentation"
        )


def _show(value: np.generic) -> str:
    """A voxel value as the user would write it: ``3`` (also for 3.0), ``0.999``."""
    number = value.item()
    if isinstance(number, float):
        return str(int(number)) if number.is_integer() else f"{number:.6g}"
    return str(number)
