"""Input checks for inference: is this file / array a usable intensity volume?

SimpleITK reads some broken NIfTI files without complaint: a truncated ``.nii`` or
``.nii.gz`` comes back zero-filled, and NaN voxels come back as 0. :func:`load_image`
therefore double-checks NIfTI files against their header (and their float data with
nibabel) before :func:`check_image_array` checks the voxels.
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from pathlib import Path

import numpy as np

from sammed3d.io import Volume, VolumeError, read_volume, volume_suffix

logger = logging.getLogger(__name__)

#: Most distinct non-negative integer values an intensity image may have before it is taken
#: for a label map (a segmentation passed as the image).
LABEL_LIKE_MAX_VALUES = 32


def load_image(path: str | os.PathLike[str], *, allow_label_like: bool = False) -> Volume:
    """Read an intensity volume and reject unusable ones with a one-line reason.

    Raises:
        FileNotFoundError: no such path.
        VolumeError: unsupported/unreadable/truncated file, not 3-D, several DICOM series,
            NaN/Inf, constant or label-like voxels.
    """
    volume = read_volume(path)
    if volume_suffix(path) in (".nii", ".nii.gz"):
        check_nifti_file(path)
    check_image_array(volume.array, allow_label_like=allow_label_like, name=str(path))
    return volume


def check_nifti_file(path: str | os.PathLike[str]) -> None:
    """Raise :class:`VolumeError` if a NIfTI file is truncated or holds NaN/Inf voxels."""
    import nibabel as nib

    path = Path(path)
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types on broken headers
        raise VolumeError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    header = img.header
    dtype = header.get_data_dtype()
    expected = int(header.get_data_offset()) + int(np.prod(img.shape)) * dtype.itemsize
    if volume_suffix(path) == ".nii":
        size = path.stat().st_size
        if size < expected:
            raise VolumeError(
                f"cannot read {path}: truncated NIfTI file ({size} bytes, its header needs "
                f"{expected})"
            )
    else:
        _check_gzip_length(path, expected)
    if np.issubdtype(dtype, np.floating):
        data = np.asanyarray(img.dataobj)
        finite = np.isfinite(data)
        if not finite.all():
            n_nan = int(np.isnan(data).sum())
            raise VolumeError(
                f"{path}: has {n_nan} NaN and {int(data.size - finite.sum()) - n_nan} infinite "
                "voxel(s); fix or mask them first"
            )


def _check_gzip_length(path: Path, expected: int) -> None:
    """Compare the gzip trailer (uncompressed size mod 2**32) with ``expected`` bytes.

    Only when they differ (truncation, or an unusual multi-member file) is the stream
    decompressed to be sure.
    """
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() < 18:
            raise VolumeError(f"cannot read {path}: truncated gzip file")
        f.seek(-4, os.SEEK_END)
        isize = int.from_bytes(f.read(4), "little")
    if isize == expected % 2**32:
        return
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(1 << 24):
                total += len(chunk)
    except (EOFError, OSError, zlib.error) as exc:
        raise VolumeError(f"cannot read {path}: truncated or corrupt gzip data ({exc})") from None
    if total < expected:
        raise VolumeError(
            f"cannot read {path}: truncated NIfTI file ({total} bytes of data, header needs "
            f"{expected})"
        )


def check_image_array(
    array: np.ndarray, *, allow_label_like: bool = False, name: str = "image"
) -> None:
    """Raise :class:`~sammed3d.io.VolumeError` if ``array`` is not a usable intensity volume.

    Checks: 3-D with at least 2 voxels per axis; a real numeric dtype; no NaN/Inf; not
    constant; and (unless ``allow_label_like``) not a label map, i.e. not only a few
    non-negative integer values.
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
    sample = array.reshape(-1)[::step]
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.mod(sample, 1) == 0):
        return
    values = np.unique(sample)
    if len(values) <= LABEL_LIKE_MAX_VALUES and values[0] >= 0:
        shown = ", ".join(str(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")
        raise VolumeError(
            f"{name}: looks like a label map (only {len(values)} distinct integer values: "
            f"{shown}); pass the intensity image, not a segmentation"
        )
