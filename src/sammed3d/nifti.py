"""NIfTI files through nibabel: the geometry other tools see, kept byte for byte on write.

SimpleITK reads a truncated NIfTI file as zero-filled, turns NaN into 0 and takes the qform
when the sform differs (``sform_code`` 4 after a registration); nibabel, FSL, nilearn and
3D Slicer take the sform when its code is > 0. :func:`read_nifti` therefore reads with nibabel,
checks the data length against the header, and derives the geometry from the sform (code > 0),
else the qform, else ``pixdim``.

Units: every length sammed3d uses is in millimetres. nibabel's ``affine`` is in the file's own
spatial unit (``xyzt_units & 0x07``: 1 metre, 2 mm, 3 micrometre, 0 unknown), so a file in
metres would read 1000x too small (each click in mm far outside it); :func:`read_nifti`
converts metres and micrometres to mm (:func:`nifti_spatial_unit`; unknown is mm), as ITK
does. :func:`write_nifti_with_header` writes a volume on the same grid with the source's
sform, qform, their codes, ``pixdim`` and units unchanged: a mask of a file in metres is in
metres too, and overlays it in every viewer.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sammed3d.io import SourceHeader, Volume, VolumeError, decompose_affine, volume_suffix

logger = logging.getLogger(__name__)


#: Header fields that define where a NIfTI grid lies (copied verbatim on write).
NIFTI_GEOMETRY_FIELDS = (
    "qform_code",
    "sform_code",
    "quatern_b",
    "quatern_c",
    "quatern_d",
    "qoffset_x",
    "qoffset_y",
    "qoffset_z",
    "srow_x",
    "srow_y",
    "srow_z",
    "xyzt_units",
    "dim_info",
)


@dataclass(frozen=True)
class NiftiSpatialUnit:
    """The spatial unit of a NIfTI header (``xyzt_units & 0x07``) and its way to mm.

    Attributes:
        code: The NIfTI code: 0 unknown, 1 metre, 2 mm, 3 micrometre (4-7 undefined).
        name: How messages name it (``"m"``, ``"mm"``, ``"µm"``, ``"unknown"``).
        multiplier / divisor: A length in this unit times ``multiplier`` over ``divisor``
            is millimetres (two factors so that both conversions are one exact operation).
    """

    code: int
    name: str
    multiplier: float = 1.0
    divisor: float = 1.0

    @property
    def is_mm(self) -> bool:
        """Whether lengths are read unchanged (mm, unknown, undefined)."""
        return self.multiplier == 1.0 and self.divisor == 1.0

    def to_mm(self, values: Any, stored: Any = np.float32) -> np.ndarray:
        """Lengths or positions in this unit -> float64 millimetres.

        Converted in ``stored``, the precision the header keeps them in (float32 for NIfTI-1,
        float64 for NIfTI-2): one correctly rounded operation, so a file in metres or
        micrometres reads as the same file written in mm does (a stored 0.0015 m is 1.5 mm,
        not 1.5000000130 mm, and clicks on voxel boundaries round the same way).
        """
        values = np.asarray(values, dtype=np.float64)
        if self.is_mm:
            return values
        kind = np.dtype(stored).newbyteorder("=")
        converted = values.astype(kind)
        if self.multiplier != 1.0:
            converted = converted * kind.type(self.multiplier)
        if self.divisor != 1.0:
            converted = converted / kind.type(self.divisor)
        return converted.astype(np.float64)


#: Defined NIfTI spatial unit codes. 0 (unknown) is read as mm, as nibabel, FSL, ITK and
#: 3D Slicer do.
NIFTI_SPATIAL_UNITS = {
    0: NiftiSpatialUnit(0, "unknown"),
    1: NiftiSpatialUnit(1, "m", multiplier=1000.0),
    2: NiftiSpatialUnit(2, "mm"),
    3: NiftiSpatialUnit(3, "µm", divisor=1000.0),
}


def nifti_spatial_unit(header: Any, *, where: object = "") -> NiftiSpatialUnit:
    """The spatial unit of a NIfTI-1/2 header (``xyzt_units & 0x07``).

    The time bits are ignored (nibabel's ``get_xyzt_units`` raises on a time code it does not
    know). An undefined spatial code (4-7) is read as mm, as ITK does, with a warning naming
    ``where``.
    """
    units = int(np.asarray(header["xyzt_units"]).item())
    code = units & 0x07
    if code in NIFTI_SPATIAL_UNITS:
        return NIFTI_SPATIAL_UNITS[code]
    logger.warning(
        "%s: the NIfTI header gives an undefined spatial unit (code %d in xyzt_units %d); "
        "its lengths are read as millimetres",
        where or "image",
        code,
        units,
    )
    return NiftiSpatialUnit(code, f"unit code {code}")


def nifti_scaling(img: Any) -> tuple[float, float]:
    """``(scl_slope, scl_inter)`` of a loaded nibabel NIfTI image; ``(1.0, 0.0)`` unscaled.

    nibabel moves them into the image's data proxy when it loads a file (the loaded header's
    ``get_slope_inter()`` then reads ``(None, None)``); a slope of 0 or NaN means no scaling
    (NIfTI-1 standard), which the proxy already gives as 1 and 0.
    """
    slope = float(getattr(img.dataobj, "slope", 1.0))
    inter = float(getattr(img.dataobj, "inter", 0.0))
    if not np.isfinite(slope) or slope == 0.0:
        slope = 1.0
    if not np.isfinite(inter):
        inter = 0.0
    return slope, inter


def scaled_dtype(raw: np.dtype) -> np.dtype:
    """The type of scaled voxels, as ITK gives them: float32 unless the raw type is wider."""
    return np.dtype(np.float32 if np.dtype(raw).itemsize <= 2 else np.float64)


def read_nifti(path: Path) -> Volume:
    """Read a NIfTI-1/2 file with nibabel (see the module docstring)."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types on broken headers
        raise VolumeError(f"cannot read {path}: not a valid NIfTI file ({_short(exc)})") from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise VolumeError(f"cannot read {path}: not a NIfTI-1/2 image ({type(img).__name__})")
    hdr = img.header
    dtype = hdr.get_data_dtype()
    if dtype.fields is not None or dtype.kind == "c":
        raise VolumeError(f"{path}: expected a scalar image, got voxels of type {dtype}")
    shape = tuple(int(s) for s in img.shape)
    if len(shape) > 3 and all(s == 1 for s in shape[3:]):
        shape = shape[:3]
    elif len(shape) == 5 and shape[3] == 1:
        raise VolumeError(
            f"{path}: expected a scalar image, got {shape[4]} components per voxel (vector image)"
        )
    if len(shape) != 3:
        raise VolumeError(
            f"{path}: expected a 3-D volume, got a {len(shape)}-D image of size {shape}"
        )
    if min(shape) < 2:
        raise VolumeError(f"{path}: expected a 3-D volume, got size {shape} (a single slice?)")
    _check_nifti_length(path, img)
    try:
        slope, inter = nifti_scaling(img)
        if volume_suffix(path) == ".nii.gz":
            offset = int(img.dataobj.offset)  # the loaded header's vox_offset reads 0
            raw = _read_gzip_data(path, offset, hdr.get_data_dtype(), shape)
        else:  # a memory map is copied into memory: no file handle stays open behind it
            raw = np.array(np.asanyarray(img.dataobj.get_unscaled()), order="K")
        raw = raw.reshape(shape, order="A")  # drop trailing 1-sized axes
        array = raw
        if slope != 1.0 or inter != 0.0:
            scaled = scaled_dtype(raw.dtype).type
            array = raw.astype(scaled) * scaled(slope)
            array += scaled(inter)
    except (EOFError, OSError, ValueError, zlib.error) as exc:
        raise VolumeError(
            f"cannot read {path}: truncated or corrupt data ({_short(exc)})"
        ) from None
    # the array stays (i, j, k)-indexed in the file's (Fortran) order: no transposing copy

    unit = nifti_spatial_unit(hdr, where=path)
    affine, used = _nifti_affine(img, path, unit)
    raw = _raw_nifti_header(path, hdr)
    pixdim = np.asarray(raw["pixdim"][1:4], dtype=np.float64)
    if used != "sform" and not (np.all(np.isfinite(pixdim)) and np.all(pixdim != 0)):
        # nibabel silently turns a zero pixdim into 1 when it loads the header
        shown = "(" + ", ".join(f"{v:g}" for v in pixdim) + f") {unit.name if unit.code else 'mm'}"
        raise VolumeError(f"{path}: the header gives voxel size {shown}: a zero axis; fix it")
    spacing, direction, origin = decompose_affine(affine, what=f"{path}: the {used}")
    try:
        volume = Volume(array, spacing, origin, direction, path)
    except VolumeError as exc:
        if unit.is_mm:
            raise
        # name the unit the sizes were converted from: a writer may have set it wrongly
        text, fix, rest = str(exc).rpartition("; fix the header")
        note = f" [converted from {unit.name}: the header's xyzt_units give code {unit.code}]"
        raise VolumeError(f"{text}{note}{fix}{rest}" if fix else f"{exc}{note}") from None
    volume.header = SourceHeader("nifti", volume.shape, volume.affine, bytes(raw.binaryblock))
    return volume


def _raw_nifti_header(path: Path, loaded: Any) -> Any:
    """The header exactly as stored (nibabel's ``load`` "fixes" some fields)."""
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(str(path)) as fobj:
            return type(loaded).from_fileobj(fobj, check=False)
    except Exception:  # the checked header was readable; fall back to it
        return loaded


def _nifti_affine(img: Any, path: Path, unit: NiftiSpatialUnit) -> tuple[np.ndarray, str]:
    """The world matrix nibabel/FSL/3D Slicer use, in mm: sform if its code > 0, else qform,
    else ``pixdim``; lengths converted from the header's spatial ``unit``."""
    hdr = header_in_mm(img.header, unit)
    sform, s_code = hdr.get_sform(coded=True)
    qform, q_code = hdr.get_qform(coded=True)
    if s_code and s_code > 0 and sform is not None:
        try:
            decompose_affine(np.asarray(sform, dtype=np.float64))
            return np.asarray(sform, dtype=np.float64), "sform"
        except VolumeError as exc:
            if not (q_code and q_code > 0):
                raise VolumeError(f"{path}: the sform {str(exc)[len('affine ') :]}") from None
            logger.warning(
                "%s: the sform cannot be used (%s); using the qform as ITK does",
                path,
                str(exc)[len("affine ") :],
            )
    if q_code and q_code > 0 and qform is not None:
        return np.asarray(qform, dtype=np.float64), "qform"
    return np.asarray(hdr.get_base_affine(), dtype=np.float64), "pixdim"


#: Header fields that hold lengths (in the header's spatial unit).
_LENGTH_FIELDS = ("qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z")


def header_in_mm(header: Any, unit: NiftiSpatialUnit | None = None) -> Any:
    """A copy of a NIfTI header with its lengths in mm (``header`` itself if they are).

    The voxel sizes (``pixdim[1:4]``), ``qoffset_*`` and ``srow_*`` are converted in the
    precision they are stored in, and the unit set to mm: nibabel's ``get_sform``,
    ``get_qform`` and ``get_base_affine`` of the copy are the matrices of the same file
    written in mm (bit for bit where the converted values are the ones it would store).
    """
    unit = nifti_spatial_unit(header) if unit is None else unit
    if unit.is_mm:
        return header
    out = header.copy()
    pixdim = np.array(out["pixdim"])
    pixdim[1:4] = unit.to_mm(pixdim[1:4], stored=pixdim.dtype)
    out["pixdim"] = pixdim
    for key in _LENGTH_FIELDS:
        out[key] = unit.to_mm(out[key], stored=out[key].dtype)
    out["xyzt_units"] = (int(np.asarray(out["xyzt_units"]).item()) & ~0x07) | 2
    return out


def _read_gzip_data(path: Path, offset: int, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """The voxel block of a ``.nii.gz`` as an ``(I, J, K)`` Fortran-ordered array.

    Reads to the end of the stream, so gzip checks its CRC-32 and length: a damaged block
    that still inflates (garbage voxels) is caught, not only a cut stream.

    Raises:
        EOFError / OSError / zlib.error: truncated or corrupt stream.
    """
    n_bytes = int(np.prod(shape)) * dtype.itemsize
    buffer = bytearray(n_bytes)
    with gzip.open(path, "rb") as stream:
        stream.seek(offset)
        got = stream.readinto(buffer)
        if got != n_bytes:
            raise EOFError(f"{got} bytes of voxel data, the header announces {n_bytes}")
        while stream.read(1 << 20):  # to the end: the CRC and length checks
            pass
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order="F")


def _check_nifti_length(path: Path, img: Any) -> None:
    """Raise if an uncompressed file is shorter than its header announces.

    (For ``.nii.gz`` the data read itself fails on a truncated or corrupt stream: nibabel
    reads exactly the announced number of bytes or raises, and zlib raises on a cut or
    damaged stream; :func:`read_nifti` turns both into a :class:`VolumeError`.)
    """
    if volume_suffix(path) != ".nii":
        return
    hdr = img.header
    expected = int(img.dataobj.offset) + int(np.prod(img.shape)) * hdr.get_data_dtype().itemsize
    size = path.stat().st_size
    if size < expected:
        raise VolumeError(
            f"cannot read {path}: truncated NIfTI file ({size} bytes, its header needs {expected})"
        )


def write_nifti_with_header(volume: Volume, header: SourceHeader, tmp: str) -> None:
    """Write ``volume`` to ``tmp`` with the geometry fields of ``header`` copied verbatim.

    The data type, scaling and intent are the new data's; ``NIFTI_GEOMETRY_FIELDS`` and
    ``pixdim[0:4]`` (qfac and voxel sizes) are the source's, byte for byte.
    """
    import nibabel as nib

    raw = header.data
    assert isinstance(raw, bytes)
    if len(raw) == nib.Nifti2Header.template_dtype.itemsize:
        src: Any = nib.Nifti2Header(binaryblock=raw)
        hdr: Any = nib.Nifti2Header()
        image_cls: Any = nib.Nifti2Image
    else:
        src = nib.Nifti1Header(binaryblock=raw)
        hdr = nib.Nifti1Header()
        image_cls = nib.Nifti1Image
    array = volume.array
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    hdr.set_data_shape(array.shape)
    hdr.set_data_dtype(array.dtype)
    for key in NIFTI_GEOMETRY_FIELDS:
        hdr[key] = src[key]
    pixdim = np.array(hdr["pixdim"])
    pixdim[:4] = src["pixdim"][:4]
    hdr["pixdim"] = pixdim
    image = image_cls(np.asarray(array), None, header=hdr)
    image.header.set_slope_inter(1.0, 0.0)
    nib.save(image, tmp)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


__all__ = [
    "NIFTI_GEOMETRY_FIELDS",
    "NIFTI_SPATIAL_UNITS",
    "NiftiSpatialUnit",
    "header_in_mm",
    "nifti_spatial_unit",
    "read_nifti",
    "write_nifti_with_header",
]
