"""Reading and writing volumes with their geometry: the one reader every command uses.

Axis convention (the one place it is defined for the whole package):

* ``Volume.array`` is indexed ``array[i, j, k]`` in **ITK/NIfTI voxel-index order**: ``i``
  runs along the first image axis (the fastest-varying one on disk), as shown by ITK-SNAP,
  3D Slicer and nibabel. This is the order of "native voxel indices" everywhere in sammed3d
  (CLI ``--point I J K``, the predictor, the session). The memory order is not part of the
  contract: arrays read from files keep the file's order (Fortran-contiguous) to avoid a
  transposing copy.
* ``Volume.affine`` maps ``(i, j, k, 1)`` to RAS+ millimetres (nibabel convention).
  ``Volume.direction`` / ``origin`` are ITK's (LPS+) values.

Supported formats: NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``), MetaImage
(``.mha``, ``.mhd``) and DICOM series (a folder holding one series).

What :func:`read_volume` guarantees (every command reads through it):

* **Complete data.** A truncated or corrupt file is a :class:`VolumeError`, never a
  zero-filled volume. NIfTI files are read with nibabel (SimpleITK zero-fills a truncated
  NIfTI file and turns NaN into 0); the other formats with SimpleITK.
* **Finite voxels.** NaN or infinite voxels are a :class:`VolumeError` naming how many.
* **Three dimensions.** 2-D images, vector/RGB images and 4-D series are a
  :class:`VolumeError`; a 4-D file holding one volume (a last axis of length 1, as some
  tools write a 3-D result) is read as that volume, and an output on its grid is 3-D.
* **Plausible geometry.** Every voxel size lies in [:data:`MIN_SPACING_MM`,
  :data:`MAX_SPACING_MM`]; a zero or negative size in the header is an error (ITK would
  silently make it 1 mm).
* **The world matrix other tools use.** For NIfTI the geometry is the matrix nibabel, FSL and
  3D Slicer use: the sform when ``sform_code > 0``, else the qform (ITK prefers the qform).
* **Millimetres.** Spacing, origin and affine are in mm whatever unit the file gives: a NIfTI
  header in metres or micrometres (``xyzt_units``) is converted (nibabel's own affine stays in
  the file's unit), an unknown unit is mm.
* **Regular DICOM series.** Slices missing, unreadable, duplicated, unevenly spaced, tilted or
  with differing orientation/size are an error naming the problem, or (spacing only, with
  ``irregular_slices="resample"``) the series is interpolated onto a regular grid through
  the true slice positions.

What :func:`write_volume` guarantees: the output is written atomically (temp file + rename,
mode from the umask); an output on the grid of a NIfTI or NRRD input, written in the same
format, carries the input's position-defining header fields unchanged (NIfTI: sform, qform,
their codes, ``pixdim``, units; NRRD: ``space``, ``space directions``, ``space origin``).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from sammed3d._wording import with_cli_wording

logger = logging.getLogger(__name__)

#: File endings we read and write (DICOM is read from a folder).
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: File endings :func:`write_volume` writes.
WRITE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")

#: Smallest and largest voxel size (mm) accepted on any axis. Outside this range a header is
#: almost certainly wrong (units in m or µm, a broken writer), and the model, which works at
#: 1.5 mm, cannot give a meaningful answer.
MIN_SPACING_MM = 0.01
MAX_SPACING_MM = 100.0

#: What to do with a DICOM series whose slices are not evenly spaced.
IrregularSlices = Literal["error", "resample"]
IRREGULAR_SLICES: tuple[str, ...] = ("error", "resample")

#: ITK's physical space (LPS+) -> nibabel's (RAS+): x and y change sign.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


class PhysicalGrid:
    """Index <-> physical maps of a regular voxel grid: the one implementation, shared by
    :class:`Volume` and :class:`sammed3d.inference.geometry.Grid`.

    Subclasses provide ``spacing`` (mm per axis), ``origin`` (ITK LPS+ mm of voxel
    ``(0, 0, 0)``) and ``direction`` (``3 x 3`` ITK direction cosines, column ``n`` is axis
    ``n``). Indices are in ITK/NIfTI voxel order ``(i, j, k)``.
    """

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray

    @property
    def matrix(self) -> np.ndarray:
        """``3 x 3`` index -> LPS mm linear part (``direction @ diag(spacing)``)."""
        return np.asarray(self.direction, dtype=np.float64) @ np.diag(self.spacing)

    @property
    def affine(self) -> np.ndarray:
        """``4 x 4`` voxel ``(i, j, k, 1)`` -> RAS+ mm (nibabel convention)."""
        aff = np.eye(4)
        aff[:3, :3] = LPS_TO_RAS @ self.matrix
        aff[:3, 3] = LPS_TO_RAS @ np.asarray(self.origin, dtype=np.float64)
        return aff

    def index_to_physical(self, ijk: np.ndarray) -> np.ndarray:
        """Continuous voxel indices ``(..., 3)`` -> ITK physical LPS mm ``(..., 3)``."""
        return np.asarray(ijk, dtype=np.float64) @ self.matrix.T + np.asarray(self.origin)

    def physical_to_index(self, xyz: np.ndarray) -> np.ndarray:
        """ITK physical LPS mm ``(..., 3)`` -> continuous voxel indices ``(..., 3)``."""
        rel = np.asarray(xyz, dtype=np.float64) - np.asarray(self.origin)
        return rel @ np.linalg.inv(self.matrix).T


class VolumeError(ValueError):
    """A volume file or array is unusable (one-line message naming the problem)."""


@dataclass(frozen=True, eq=False)
class SourceHeader:
    """Position-defining header fields of the file a volume was read from.

    Kept so that a volume written on the same grid, in the same format, carries exactly the
    fields it came with (ITK would rewrite them: one matrix in both NIfTI slots, NRRD always
    in LPS).

    Attributes:
        format: ``"nifti"`` or ``"nrrd"``.
        shape: ``(I, J, K)`` of the grid the fields describe.
        affine: ``4 x 4`` voxel -> RAS mm of that grid (to check a volume still has it).
        data: NIfTI: the raw header bytes; NRRD: the ``space*`` header lines.
    """

    format: str
    shape: tuple[int, int, int]
    affine: np.ndarray
    data: bytes | tuple[str, ...]

    def describes(self, volume: Volume) -> bool:
        """Whether ``volume`` still has the grid these fields define."""
        return volume.shape == self.shape and bool(
            np.allclose(volume.affine, self.affine, rtol=0, atol=1e-5 * max(volume.spacing))
        )


@dataclass
class Volume(PhysicalGrid):
    """A 3-D scalar volume with its physical geometry.

    Args:
        array: Voxel values ``(I, J, K)`` in ITK/NIfTI index order.
        spacing: Voxel size along ``i, j, k`` in mm, each in
            [:data:`MIN_SPACING_MM`, :data:`MAX_SPACING_MM`].
        origin: Physical position of voxel ``(0, 0, 0)`` (ITK, LPS+ mm).
        direction: ``3 x 3`` ITK direction cosines (LPS+); column ``n`` is axis ``n``.
        path: Where it was read from, if anywhere.
        header: The source file's position-defining header fields (set by
            :func:`read_volume`; kept by :meth:`with_array`).

    Raises:
        VolumeError: not 3-D, implausible spacing, or a direction that is not a rotation
            (possibly with a flip).
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    path: Path | None = None
    header: SourceHeader | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = f"{self.path}: " if self.path is not None else ""
        arr = np.asarray(self.array)
        if arr.ndim != 3:
            raise VolumeError(f"{where}expected a 3-D volume, got an array of shape {arr.shape}")
        self.array = arr
        self.spacing = check_spacing(self.spacing, where=where)
        self.origin = tuple(float(o) for o in self.origin)  # type: ignore[assignment]
        if len(self.origin) != 3 or not all(np.isfinite(self.origin)):
            raise VolumeError(f"{where}origin must be three finite numbers, got {self.origin}")
        direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        if not np.isfinite(direction).all() or abs(abs(np.linalg.det(direction)) - 1) > 1e-3:
            raise VolumeError(
                f"{where}direction must be an orthonormal 3x3 matrix, got {direction.tolist()}"
            )
        self.direction = direction

    @property
    def shape(self) -> tuple[int, int, int]:
        s = self.array.shape
        return (s[0], s[1], s[2])

    @classmethod
    def from_affine(cls, array: np.ndarray, affine: np.ndarray) -> Volume:
        """Build from an array and a nibabel-style RAS affine (rotation x scaling + shift).

        Raises:
            VolumeError: not 4x4, a zero-length axis, or a sheared matrix.
        """
        affine = np.asarray(affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise VolumeError(f"affine must be 4x4, got shape {affine.shape}")
        spacing, direction, origin = decompose_affine(affine)
        return cls(array=array, spacing=spacing, origin=origin, direction=direction)

    def with_array(self, array: np.ndarray) -> Volume:
        """Same geometry (and source header), other voxels (shape must match)."""
        if tuple(np.shape(array)) != self.shape:
            raise VolumeError(f"array shape {np.shape(array)} != volume shape {self.shape}")
        return Volume(
            array, self.spacing, self.origin, self.direction.copy(), None, header=self.header
        )

    def __repr__(self) -> str:
        return (
            f"Volume(shape={self.shape}, dtype={self.array.dtype}, spacing="
            f"{tuple(round(s, 4) for s in self.spacing)}, path={self.path})"
        )


def check_spacing(spacing: Sequence[float], *, where: str = "") -> tuple[float, float, float]:
    """Validate voxel sizes (mm): three finite numbers in [MIN_SPACING_MM, MAX_SPACING_MM].

    Returns:
        The spacing as a tuple of floats.

    Raises:
        VolumeError: one line naming the bad value.
    """
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise VolumeError(f"{where}spacing must be three numbers, got {spacing!r}") from None
    if len(values) != 3 or not all(np.isfinite(values)):
        raise VolumeError(f"{where}spacing must be three finite numbers, got {spacing!r}")
    shown = "(" + ", ".join(f"{s:g}" for s in values) + ") mm"
    if min(values) <= 0:
        raise VolumeError(f"{where}voxel size {shown} has a zero or negative axis; fix the header")
    if min(values) < MIN_SPACING_MM or max(values) > MAX_SPACING_MM:
        raise VolumeError(
            f"{where}voxel size {shown} is outside the plausible range {MIN_SPACING_MM:g}-"
            f"{MAX_SPACING_MM:g} mm (a header in the wrong unit?); fix the header"
        )
    return (values[0], values[1], values[2])


def decompose_affine(
    affine: np.ndarray, *, what: str = "affine"
) -> tuple[tuple[float, float, float], np.ndarray, tuple[float, float, float]]:
    """RAS affine -> (spacing, ITK direction, ITK origin).

    Raises:
        VolumeError: non-finite values, a zero-length axis, or a sheared matrix (named ``what``).
    """
    lps = LPS_TO_RAS @ affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    if not np.all(np.isfinite(affine)):
        raise VolumeError(f"{what} holds non-finite values: {affine.tolist()}")
    if not np.all(spacing > 0):
        shown = "(" + ", ".join(f"{s:g}" for s in spacing) + ") mm"
        raise VolumeError(f"{what} gives voxel size {shown}: a zero axis; fix the header")
    direction = lps / spacing
    gram = direction.T @ direction
    if not np.allclose(gram, np.eye(3), atol=1e-4):
        raise VolumeError(
            f"{what} is sheared (its axes are not perpendicular); only rotations, flips and "
            "scalings are supported"
        )
    origin = LPS_TO_RAS @ affine[:3, 3]
    return (
        (float(spacing[0]), float(spacing[1]), float(spacing[2])),
        direction,
        (float(origin[0]), float(origin[1]), float(origin[2])),
    )


def world_extent(
    grid: PhysicalGrid, shape: Sequence[int], *, space: str = "ras"
) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
    """The box a grid's voxels fill, in world mm: ``((x0, x1), (y0, y1), (z0, z1))``.

    The box around the voxels' outer faces (index -0.5 to n - 0.5 on every axis), so a world
    point inside it (on an axis-aligned grid) rounds to a voxel of the image.

    Args:
        grid: A :class:`Volume` or any :class:`PhysicalGrid`.
        shape: Its voxels per axis.
        space: ``"ras"`` (nibabel, 3D Slicer) or ``"lps"`` (ITK, DICOM).
    """
    if space not in ("ras", "lps"):
        raise ValueError(f"space must be 'ras' or 'lps', got {space!r}")
    n = np.asarray(shape, dtype=np.float64)
    corners = np.array(
        [[-0.5 + (n[a] if (c >> a) & 1 else 0.0) for a in range(3)] for c in range(8)]
    )
    mm = grid.index_to_physical(corners)
    if space == "ras":
        mm = mm @ LPS_TO_RAS.T
    lo, hi = mm.min(axis=0), mm.max(axis=0)
    return (
        (float(lo[0]), float(hi[0])),
        (float(lo[1]), float(hi[1])),
        (float(lo[2]), float(hi[2])),
    )


def describe_world_extent(grid: PhysicalGrid, shape: Sequence[int], *, space: str = "ras") -> str:
    """:func:`world_extent` for a message: ``"x -90.0 to 90.0, y ..., z ... mm (RAS)"``."""
    box = world_extent(grid, shape, space=space)
    axes = ", ".join(f"{a} {lo:.1f} to {hi:.1f}" for a, (lo, hi) in zip("xyz", box, strict=True))
    return f"{axes} mm ({space.upper()})"


def volume_suffix(path: str | os.PathLike[str]) -> str:
    """The recognised file ending of ``path`` (``.nii.gz`` counts as one), or ``""``."""
    name = Path(path).name.lower()
    for suffix in VOLUME_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return ""


# ------------------------------------------------------------------------------------------
# reading


def read_volume(
    path: str | os.PathLike[str], *, irregular_slices: IrregularSlices = "error"
) -> Volume:
    """Read a 3-D scalar volume (NIfTI, NRRD, MetaImage, or a DICOM series folder).

    Args:
        path: The file, or a folder holding exactly one DICOM series.
        irregular_slices: DICOM only: ``"error"`` (default) refuses a series whose slices are
            not evenly spaced (a slice missing or unreadable, uneven gaps); ``"resample"``
            reads it onto a regular grid through the true slice positions (linear
            interpolation between neighbouring slices, spacing = the smallest slice distance).

    Returns:
        The volume; ``volume.header`` keeps the position-defining header fields (NIfTI, NRRD).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        VolumeError: unsupported ending; truncated, corrupt or unreadable file; not 3-D;
            vector/RGB voxels; NaN/Inf voxels; zero, negative or implausible voxel size;
            sheared geometry; a DICOM folder with no or several series, or an irregular series.
    """
    path = Path(path)
    if irregular_slices not in IRREGULAR_SLICES:
        raise ValueError(
            f"irregular_slices must be one of {list(IRREGULAR_SLICES)}, got {irregular_slices!r}"
        )
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if path.is_dir():
        from sammed3d.dicom_series import read_dicom_series

        image = read_dicom_series(path, irregular_slices=irregular_slices)
        volume = _from_sitk(image, path)
    else:
        suffix = volume_suffix(path)
        if not suffix:
            return _read_dicom_file(path, irregular_slices)
        volume = _read_named(path, suffix)
    check_finite(volume.array, name=str(path))
    return volume


def _read_dicom_file(path: Path, irregular_slices: IrregularSlices) -> Volume:
    """A file without an image ending: a DICOM file (by its bytes, or a ``.dcm`` ending) is
    read with the rest of its series when its folder holds more slices of it, else alone (a
    multi-frame volume); anything else is an unsupported type."""
    from sammed3d.sniff import volume_format

    try:
        dicom = path.suffix.lower() == ".dcm" or volume_format(path) == "DICOM"
    except OSError:
        dicom = False
    if not dicom:
        raise VolumeError(
            f"unsupported file type {path.name!r}: expected one of "
            f"{', '.join(VOLUME_SUFFIXES)}, a DICOM file or a DICOM folder"
        )
    from sammed3d.dicom_series import read_dicom_series, series_of_file

    uid = series_of_file(path)
    if uid is not None:
        image = read_dicom_series(path.parent, irregular_slices=irregular_slices, series_uid=uid)
        volume = _from_sitk(image, path.parent)
    else:
        volume = _read_named(path, ".dcm")
    check_finite(volume.array, name=str(path))
    return volume


def _read_named(path: Path, suffix: str) -> Volume:
    """:func:`_read_file`; when it fails and the bytes are another format than ``suffix``
    names, the error says which (and the ending to give the file, or, for a picture or other
    file that holds no volume, what sammed3d reads)."""
    try:
        return _read_file(path, suffix)
    except VolumeError as exc:
        from sammed3d.sniff import misnamed_volume

        # a reader that opened the file (a PNG read by SimpleITK as a 2-D image) said why
        # it is unusable, not that it could not read it
        why = misnamed_volume(path, suffix, opened=not str(exc).startswith("cannot read"))
        if why is None:
            raise
        raise VolumeError(f"cannot read {path}: {why}") from None


def _read_file(path: Path, suffix: str) -> Volume:
    """One image file by the reader its ending names."""
    if suffix in (".nii", ".nii.gz"):
        from sammed3d.nifti import read_nifti

        return read_nifti(path)
    volume = _from_sitk(_read_itk(path), path)
    if suffix in (".nrrd", ".nhdr"):
        volume.header = _nrrd_header(path, volume)
    return volume


def check_finite(array: np.ndarray, *, name: str = "volume") -> None:
    """Raise :class:`VolumeError` if a float array holds NaN or infinite values."""
    if not np.issubdtype(array.dtype, np.floating):
        return
    finite = np.isfinite(array)
    if finite.all():
        return
    n_nan = int(np.isnan(array).sum())
    n_inf = int(array.size - finite.sum()) - n_nan
    raise VolumeError(
        f"{name}: has {n_nan} NaN and {n_inf} infinite voxel(s); fix or mask them first"
    )


def _read_itk(path: Path):  # noqa: ANN202 - SimpleITK image
    import SimpleITK as sitk

    with _native_stderr() as noise:
        try:
            return sitk.ReadImage(str(path))
        except RuntimeError as exc:
            error = exc
    # the C++ readers print part of the reason straight to the process's stderr
    raise VolumeError(f"cannot read {path}: {_itk_reason(error, noise.read())}") from None


class _Captured:
    def __init__(self) -> None:
        self.text = ""

    def read(self) -> str:
        return self.text


@contextmanager
def _native_stderr() -> Iterator[_Captured]:
    """Capture what C++ code writes to file descriptor 2 (MetaIO, NrrdIO print there)."""
    captured = _Captured()
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2 (embedded interpreters): leave it alone
        yield captured
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read().decode("utf-8", "replace")


def _itk_reason(exc: BaseException, noise: str = "") -> str:
    """A one-line reason from a SimpleITK exception (its text is multi-line noise)."""
    text = f"{noise}\n{exc}"
    if "Zero-valued spacing" in text:
        m = re.search(r"to \[([^\]]*)\]", text)
        shown = f" ({m.group(1)})" if m else ""
        return f"the header gives a zero voxel size{shown}; fix the header"
    patterns = (
        "fread got only",
        "expected .* bytes but received",
        "data not read completely",
        "Premature end",
        "truncated",
    )
    if any(re.search(p, text) for p in patterns):
        return "the file is truncated (less data than its header announces)"
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # SimpleITK puts the useful sentence last, after file/line noise.
    last = lines[-1] if lines else type(exc).__name__
    if last.startswith("Reason:") or "No such file" in last:
        return "not a readable image, or truncated/corrupt"
    return last


def _from_sitk(image, path: Path | None) -> Volume:  # noqa: ANN001
    import SimpleITK as sitk

    if image.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeError(
            f"{path}: expected a scalar image, got {image.GetNumberOfComponentsPerPixel()} "
            "components per voxel (RGB or vector image)"
        )
    dim = image.GetDimension()
    size = image.GetSize()
    if dim == 4 and size[3] == 1:
        image = image[:, :, :, 0]
        dim, size = 3, image.GetSize()
    if dim != 3:
        raise VolumeError(f"{path}: expected a 3-D volume, got a {dim}-D image of size {size}")
    if min(size) < 2:
        raise VolumeError(f"{path}: expected a 3-D volume, got size {size} (a single slice?)")
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (k,j,i) -> (i,j,k)
    return Volume(
        array=array,  # a (i, j, k) view of ITK's (k, j, i) buffer: no transposing copy
        spacing=image.GetSpacing(),
        origin=image.GetOrigin(),
        direction=np.asarray(image.GetDirection()).reshape(3, 3),
        path=path,
    )


# NRRD -------------------------------------------------------------------------------------

_NRRD_SPACE_KEYS = ("space", "space dimension", "space directions", "space origin", "space units")


def _nrrd_header_lines(path: Path) -> list[str] | None:
    """The header lines of an NRRD file (up to the blank line), or None if unreadable."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return None
    end = head.find(b"\n\n")
    if not head.startswith(b"NRRD") or end < 0:
        return None
    try:
        return head[:end].decode("ascii").splitlines()
    except UnicodeDecodeError:
        return None


def _nrrd_field(line: str) -> str | None:
    if line.startswith("#") or ":" not in line or ":=" in line:
        return None
    return line.split(":", 1)[0].strip().lower()


def _nrrd_header(path: Path, volume: Volume) -> SourceHeader | None:
    lines = _nrrd_header_lines(path)
    if lines is None:
        return None
    keep = tuple(ln for ln in lines if _nrrd_field(ln) in _NRRD_SPACE_KEYS)
    if not any(_nrrd_field(ln) == "space directions" for ln in keep):
        return None
    return SourceHeader("nrrd", volume.shape, volume.affine, keep)


def _patch_nrrd_header(tmp: str, header: SourceHeader) -> None:
    """Put the source's ``space*`` lines into an NRRD file ITK just wrote."""
    with open(tmp, "rb") as f:
        content = f.read()
    end = content.find(b"\n\n")
    if end < 0:
        return
    lines = content[:end].decode("ascii").splitlines()
    kept = [ln for ln in lines if _nrrd_field(ln) not in _NRRD_SPACE_KEYS]
    first = next((n for n, ln in enumerate(lines) if _nrrd_field(ln) in _NRRD_SPACE_KEYS), None)
    at = (
        len(kept)
        if first is None
        else sum(1 for ln in lines[:first] if _nrrd_field(ln) not in _NRRD_SPACE_KEYS)
    )
    new = kept[:at] + list(header.data) + kept[at:]  # type: ignore[arg-type]
    with open(tmp, "wb") as f:
        f.write("\n".join(new).encode("ascii") + content[end:])


# ------------------------------------------------------------------------------------------
# writing


def to_sitk(volume: Volume):  # noqa: ANN201 - SimpleITK image
    """The volume as a SimpleITK image (same geometry)."""
    import SimpleITK as sitk

    array = volume.array
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing(tuple(float(s) for s in volume.spacing))
    image.SetOrigin(tuple(float(o) for o in volume.origin))
    image.SetDirection(tuple(float(d) for d in volume.direction.ravel()))
    return image


def write_volume(
    volume: Volume,
    path: str | os.PathLike[str],
    *,
    protect: Sequence[str | os.PathLike[str]] = (),
    compress: bool = True,
    overwrite: bool = True,
) -> Path:
    """Write atomically (temp file + rename) in the format the file name asks for.

    The geometry is written exactly. If ``volume.header`` came from a file of the same format
    and still describes the volume's grid, its position-defining fields are written
    unchanged (NIfTI: sform/qform and their codes; NRRD: the ``space*`` lines).

    Args:
        volume: What to write.
        path: Output file; the ending picks the format.
        protect: Paths that must never be overwritten (the inputs).
        compress: Compress where the format supports it.
        overwrite: Replace an existing ``path`` (False: :class:`FileExistsError`).

    Raises:
        VolumeError: unsupported ending, or ``path`` is one of ``protect``.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        PermissionError: the folder is not writable (the message names ``path``).
    """
    check_volume_name(path)
    path = Path(path)
    suffix = volume_suffix(path)
    check_output_file(path, overwrite=overwrite, protect=protect)
    header = (
        volume.header if volume.header is not None and volume.header.describes(volume) else None
    )
    fmt = "nifti" if suffix in (".nii", ".nii.gz") else suffix[1:]

    def write(tmp: str) -> None:
        if header is not None and header.format == "nifti" and fmt == "nifti":
            from sammed3d.nifti import write_nifti_with_header

            write_nifti_with_header(volume, header, tmp)
            return
        import SimpleITK as sitk

        sitk.WriteImage(to_sitk(volume), tmp, useCompression=compress)
        if header is not None and header.format == "nrrd" and fmt == "nrrd":
            _patch_nrrd_header(tmp, header)

    return atomic_write(path, write, suffix=suffix)


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[str], None], *, suffix: str = ".tmp"
) -> Path:
    """Create ``path`` atomically: ``write(tmp)`` fills a temp file in the same folder, which
    then gets the umask's mode (``0o666 & ~umask``, as ``open()`` gives) and replaces ``path``.

    Args:
        path: The final file.
        write: Called with the temp file's name; writes the content.
        suffix: Ending of the temp file (writers that pick the format by name need it).

    Raises:
        PermissionError / OSError: naming ``path`` (not the temp file) when the folder is not
            writable.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as exc:
        raise _unwritable(path, exc) from None
    os.close(fd)
    try:
        write(tmp)
        _fsync(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write a UTF-8 text file atomically (temp file in the same folder, fsync, rename)."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)

    return atomic_write(path, write)


def _fsync(name: str) -> None:
    fd = os.open(name, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def default_file_mode() -> int:
    """``0o666`` minus the process umask (what ``open()`` would give a new file)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


#: errno values that mean "this folder does not take new files": the user's choice of output
#: (exit 2), unlike a full disk or an I/O error (the machine; exit 1). ENOENT in an existing
#: folder is a pseudo file system (/proc, /sys).
_REFUSING_FOLDER = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT}


def _unwritable(path: Path, exc: OSError) -> OSError:
    """The error for a file that cannot be created, naming ``path`` and its nearest folder.

    Returns a :class:`PermissionError` (bad input, CLI exit 2) when the folder refuses new files
    (no permission, read-only or pseudo file system), otherwise an ``OSError`` (exit 1).
    """
    reason = (exc.strerror or type(exc).__name__).lower()
    folder = _existing_ancestor(path.parent)
    if isinstance(exc, PermissionError) or exc.errno in _REFUSING_FOLDER:
        if exc.errno == errno.ENOENT:  # the folder exists: strerror would say it does not
            reason = "the folder does not accept new files"
        err: OSError = PermissionError(
            f"cannot write {path}: {reason} (in {folder}); choose another output"
        )
    else:
        err = OSError(f"cannot write {path}: {reason} (in {folder})")
    err.errno = exc.errno
    return err


def _existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_volume_name(path: str | os.PathLike[str]) -> None:
    """Check that ``path`` names a volume file sammed3d can write (by its ending).

    Raises:
        VolumeError: a folder (an existing one, or a name ending in a path separator) or
            another ending than .nii.gz, .nii, .nrrd, .mha (one line naming the path as given).
    """
    text = os.fspath(path)
    if text.endswith(("/", os.sep)) or Path(text).is_dir():
        raise VolumeError(
            f"cannot write {text!r}: it is a folder; give a file name such as "
            f"{os.path.join(text, 'mask.nii.gz')!r}"
        )
    if volume_suffix(text) not in WRITE_SUFFIXES:
        raise VolumeError(
            f"cannot write {text!r}: the output must end in .nii.gz, .nii, .nrrd or .mha"
        )


def check_output_file(
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    protect: Sequence[str | os.PathLike[str] | None] = (),
) -> Path:
    """Check, before any work, that ``path`` can be written as a new output file.

    The rule every command follows: an existing output is replaced only with
    ``overwrite=True`` (CLI ``--overwrite``); an input is never replaced; the folder must be
    writable. Nothing is created.

    Raises:
        VolumeError: ``path`` is one of ``protect`` (an input).
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        IsADirectoryError: ``path`` is a folder.
        PermissionError / NotADirectoryError: the folder cannot hold new files.
    """
    path = Path(path)
    if path.exists():
        for other in protect:
            if (
                other is not None
                and Path(other).exists()
                and Path(other).resolve() == path.resolve()
            ):
                raise VolumeError(f"refusing to overwrite the input file {path}")
        if path.is_dir():
            raise IsADirectoryError(f"output {path} is a folder; give a file name")
        if not overwrite:
            raise with_cli_wording(
                FileExistsError(f"output {path} exists; pass overwrite=True to replace it"),
                f"output {path} exists; pass --overwrite to replace it",
            )
    check_writable_folder(path.parent, for_path=path)
    return path


def check_writable_folder(
    folder: str | os.PathLike[str], *, for_path: str | os.PathLike[str] | None = None
) -> None:
    """Raise unless files can be created in ``folder`` (or, if it does not exist yet, in the
    nearest existing folder above it). Creates nothing that stays.

    Raises:
        NotADirectoryError: ``folder`` or a parent is a file.
        PermissionError: the folder is not writable (named with ``for_path`` if given).
    """
    folder = Path(folder)
    shown = Path(for_path) if for_path is not None else folder
    existing = _existing_ancestor(folder)
    if not existing.is_dir():
        raise NotADirectoryError(f"cannot write {shown}: {existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".sammed3d-write-check.", dir=existing)
    except OSError as exc:
        raise _unwritable(Path(shown), exc) from None
    os.close(fd)
    os.unlink(probe)


def _same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


__all__ = [
    "IRREGULAR_SLICES",
    "MAX_SPACING_MM",
    "MIN_SPACING_MM",
    "VOLUME_SUFFIXES",
    "WRITE_SUFFIXES",
    "LPS_TO_RAS",
    "IrregularSlices",
    "PhysicalGrid",
    "SourceHeader",
    "Volume",
    "VolumeError",
    "atomic_write",
    "atomic_write_text",
    "check_finite",
    "check_output_file",
    "check_volume_name",
    "check_spacing",
    "check_writable_folder",
    "decompose_affine",
    "default_file_mode",
    "describe_world_extent",
    "read_volume",
    "to_sitk",
    "volume_suffix",
    "world_extent",
    "write_volume",
]
