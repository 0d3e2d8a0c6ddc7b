"""Image files the server opens (web uploads, start-up volumes): the decoded-size limit read
from the header before any voxel is, and checks of the files named at start-up.

``--max-upload-mb`` bounds both the request body and the decoded image. A compressed file
can be small and decode to a huge array (a 1 MiB ``.nii.gz`` of a 600³ volume is 206 MiB),
so :func:`check_decoded_size` reads the header's shape and voxel type (nibabel for NIfTI,
SimpleITK's image information for NRRD, MetaImage and DICOM) and refuses the file with
:class:`ImageTooLarge` (HTTP 413) before the voxels are read, as
:func:`sammed3d.serve.wire.decode_array` does for protocol uploads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sammed3d.io import IrregularSlices, VolumeError, volume_suffix

#: Start-up volumes that decode to at most this many bytes are read in full at start-up
#: (NaN, constant, label-like voxels are found then); larger ones get the header checks only,
#: so that a start with big files stays quick.
FULL_CHECK_BYTES = 256 * 2**20

#: SimpleITK pixel type names -> numpy voxel types (scalar and vector pixels alike).
_ITK_TYPES = {
    "UInt8": "uint8",
    "Int8": "int8",
    "UInt16": "uint16",
    "Int16": "int16",
    "UInt32": "uint32",
    "Int32": "int32",
    "UInt64": "uint64",
    "Int64": "int64",
    "Float32": "float32",
    "Float64": "float64",
}


class ImageTooLarge(VolumeError):
    """An image whose decoded voxels exceed the server's limit (HTTP 413)."""

    status = 413


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says about its voxels.

    Args:
        shape: Voxels per axis, as the header gives them (trailing 1-sized axes dropped).
        dtype: The voxel type once decoded (scaled NIfTI data become floats).
    """

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        """Bytes of the decoded array."""
        count = 1
        for n in self.shape:
            count *= int(n)
        return count * self.dtype.itemsize

    def describe(self) -> str:
        """``600 x 600 x 600 uint8`` (for messages)."""
        return f"{' x '.join(str(n) for n in self.shape)} {self.dtype.name}"


def read_header(path: str | os.PathLike[str]) -> ImageHeader | None:
    """Shape and decoded voxel type of an image file or DICOM folder, from its header only.

    Returns:
        The header's description, or None when the header cannot be read here (the full
        reader, :func:`sammed3d.io.read_volume`, then says why the file is unusable).
    """
    path = Path(path)
    try:
        if path.is_dir():
            return _dicom_header(path)
        if not volume_suffix(path):  # a DICOM file: the reader takes its whole series
            return None
        if volume_suffix(path) in (".nii", ".nii.gz"):
            return _nifti_header(path)
        return _itk_header(path)
    except Exception:  # any reader failure: the full reader gives the reason
        return None


def check_decoded_size(
    path: str | os.PathLike[str], max_bytes: int, *, name: str | None = None
) -> ImageHeader | None:
    """Refuse an image whose decoded voxels would exceed ``max_bytes``, from its header.

    Args:
        path: The image file or DICOM folder.
        max_bytes: Largest decoded image accepted (``--max-upload-mb``).
        name: How messages name the file (default: ``path``).

    Returns:
        The header (None when it cannot be read: the full reader then reports the file).

    Raises:
        ImageTooLarge: the header declares a larger image (one line naming the decoded size
            and the limit).
    """
    header = read_header(path)
    if header is not None:
        check_nbytes(header.nbytes, max_bytes, name=name or str(path), what=header.describe())
    return header


def check_nbytes(nbytes: int, max_bytes: int, *, name: str, what: str = "") -> None:
    """Raise :class:`ImageTooLarge` if an image of ``nbytes`` decoded bytes exceeds
    ``max_bytes`` (``what``: its shape and type, for the message).

    Raises:
        ImageTooLarge: ``nbytes > max_bytes``.
    """
    if nbytes > max_bytes:
        shown = f" ({what})" if what else ""
        raise ImageTooLarge(
            f"{name}: the image{shown} decodes to {_size(nbytes)}; this server accepts at "
            f"most {_size(max_bytes)} (--max-upload-mb)"
        )


def _size(nbytes: int) -> str:
    """``17.2 MiB``; below 0.1 MiB in KiB (``31.2 KiB``)."""
    if nbytes < 2**20 // 10:
        return f"{nbytes / 2**10:.1f} KiB"
    return f"{nbytes / 2**20:.1f} MiB"


def check_startup_volume(
    path: str | os.PathLike[str],
    max_bytes: int,
    *,
    full_check_bytes: int = FULL_CHECK_BYTES,
    irregular_slices: IrregularSlices = "error",
) -> str:
    """Check an image named on ``sammed3d serve``'s command line before the server starts.

    Images that decode to at most ``full_check_bytes`` are read and checked in full
    (:func:`sammed3d.inference.validation.load_image`: 3-D, finite, not constant, not a label
    map); larger ones get the header checks (readable, 3-D, within ``max_bytes``).
    ``irregular_slices`` is :func:`sammed3d.io.read_volume`'s (a DICOM series with uneven
    slice gaps).

    Returns:
        ``"read"`` (fully checked) or ``"header"`` (header checks only).

    Raises:
        FileNotFoundError: no such file or folder.
        ImageTooLarge: decodes to more than ``max_bytes``.
        VolumeError: unreadable, not 3-D, NaN/Inf, constant or label-like voxels.
    """
    from sammed3d.inference.validation import load_image

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"volume not found: {path}")
    header = check_decoded_size(path, max_bytes)
    if header is not None and header.nbytes > full_check_bytes:
        shape = header.shape
        if len(shape) != 3 or min(shape) < 2:
            from sammed3d.sniff import misnamed_volume

            why = misnamed_volume(path, volume_suffix(path), opened=True)  # a big picture
            if why is not None:
                raise VolumeError(f"cannot read {path}: {why}")
            raise VolumeError(f"{path}: expected a 3-D volume, got size {shape}")
        return "header"
    volume = load_image(path, irregular_slices=irregular_slices)
    check_nbytes(volume.array.nbytes, max_bytes, name=str(path), what=_describe(volume.array))
    return "read"


def _describe(array: np.ndarray) -> str:
    return ImageHeader(tuple(int(n) for n in array.shape), array.dtype).describe()


def _squeeze(shape: tuple[int, ...]) -> tuple[int, ...]:
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def _nifti_header(path: Path) -> ImageHeader | None:
    import nibabel as nib

    from sammed3d.nifti import nifti_scaling, scaled_dtype

    img = nib.load(str(path))  # the header only: the voxels stay on disk
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        return None
    hdr = img.header
    dtype = np.dtype(hdr.get_data_dtype())
    if dtype.fields is not None or dtype.kind == "c":
        return None
    if nifti_scaling(img) != (1.0, 0.0):  # decoded as the reader decodes them
        dtype = scaled_dtype(dtype)
    return ImageHeader(_squeeze(tuple(int(n) for n in img.shape)), dtype)


def _itk_info(path: Path) -> tuple[tuple[int, ...], np.dtype] | None:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    dtype = _itk_dtype(reader.GetPixelID())
    if dtype is None:
        return None
    components = max(1, int(reader.GetNumberOfComponents()))
    shape = tuple(int(n) for n in reader.GetSize())
    if components > 1:
        shape = (*shape, components)
    return shape, dtype


def _itk_header(path: Path) -> ImageHeader | None:
    info = _itk_info(path)
    if info is None:
        return None
    shape, dtype = info
    return ImageHeader(_squeeze(shape), dtype)


def _dicom_header(folder: Path) -> ImageHeader | None:
    import SimpleITK as sitk

    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
    if not files:
        return None
    info = _itk_info(Path(files[0]))
    if info is None:
        return None
    shape, dtype = info
    if len(shape) < 3:
        shape = (*shape, 1)
    # one file per slice (or per stack of frames): the series stacks them
    return ImageHeader((shape[0], shape[1], shape[2] * len(files), *shape[3:]), dtype)


def _itk_dtype(pixel_id: Any) -> np.dtype | None:
    import SimpleITK as sitk

    for name, numpy_name in _ITK_TYPES.items():
        for prefix in ("sitk", "sitkVector"):
            if getattr(sitk, prefix + name, None) == pixel_id:
                return np.dtype(numpy_name)
    return None


__all__ = [
    "FULL_CHECK_BYTES",
    "ImageHeader",
    "ImageTooLarge",
    "check_decoded_size",
    "check_nbytes",
    "check_startup_volume",
    "read_header",
]
