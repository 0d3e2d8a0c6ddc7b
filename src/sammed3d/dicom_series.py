"""Reading one DICOM series from a folder, refusing slices that do not form a regular grid.

ITK's series reader stacks whatever slices it finds and spreads them evenly between the first
and the last one: with a slice file missing (or unreadable, which GDCM silently skips), every
slice after the gap lands up to one spacing away from its recorded position and only a raw
"Non uniform sampling" warning shows. This module checks every slice's header first
(``ImagePositionPatient``, ``ImageOrientationPatient``, size, pixel spacing):

* differing orientations, sizes or pixel spacings, two slices at one position, and slices
  shifted within their plane (gantry tilt) are always a :class:`~sammed3d.io.VolumeError`;
* uneven slice distances (missing, unreadable or extra slices, variable spacing) are an error
  naming the gap, or with ``irregular_slices="resample"`` the series is interpolated
  linearly onto a regular grid through the true slice positions (spacing: the smallest slice
  distance, adjusted so the first and last slices stay where they are).

Positions along the slice normal ``n = row x column`` (from ``ImageOrientationPatient``) are
``s = ImagePositionPatient · n``. Distances agree when they differ by at most
``max(0.02 mm, 1 %)`` (DICOM writers round positions).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sammed3d.io import IrregularSlices, VolumeError

logger = logging.getLogger(__name__)

_POSITION = "0020|0032"
_ORIENTATION = "0020|0037"
_PIXEL_SPACING = "0028|0030"
_ROWS = "0028|0010"
_COLUMNS = "0028|0011"


@dataclass(frozen=True)
class SliceHeader:
    """The geometry of one slice file.

    Attributes:
        file: The slice file.
        position: ``ImagePositionPatient`` (LPS mm, 3).
        orientation: ``ImageOrientationPatient``: row then column direction cosines (6).
        size: ``(rows, columns)``.
        pixel_spacing: ``PixelSpacing`` (row spacing, column spacing) in mm.
    """

    file: Path
    position: np.ndarray
    orientation: np.ndarray
    size: tuple[int, int]
    pixel_spacing: tuple[float, float]


@contextmanager
def _quiet_itk() -> Iterator[None]:
    """Silence ITK's own warnings (we report problems ourselves)."""
    import SimpleITK as sitk

    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def read_dicom_series(
    folder: Path, *, irregular_slices: IrregularSlices = "error", series_uid: str | None = None
) -> Any:
    """Read one DICOM series of ``folder`` as a SimpleITK image (see module doc).

    Args:
        folder: The folder of the slice files.
        irregular_slices: See :func:`sammed3d.io.read_volume`.
        series_uid: The ``SeriesInstanceUID`` to read; None: the folder must hold one series.

    Raises:
        VolumeError: no series, several series (each named with its description and number
            of files) and no ``series_uid``, an unreadable slice, or an irregular series.
    """
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    with _quiet_itk():
        series = reader.GetGDCMSeriesIDs(str(folder)) or ()
    if not series:
        raise VolumeError(f"{folder} is a folder without a DICOM series")
    if series_uid is not None and series_uid in series:
        series = (series_uid,)
    if len(series) > 1:
        raise VolumeError(
            f"{folder} holds {len(series)} DICOM series: {_describe_series(reader, folder, series)}"
            "; give one file of the series you want (its series is read), or a folder with "
            "one series"
        )
    with _quiet_itk():
        files = [Path(f) for f in reader.GetGDCMSeriesFileNames(str(folder), series[0])]
    if len(files) < 2:  # one file: a multi-frame volume (or a single slice, refused later)
        return _execute(reader, files, folder)
    headers = [_slice_header(f) for f in files]
    if any(h is None for h in headers):
        # no geometry tags (e.g. secondary capture): nothing to check against; ITK decides
        logger.warning("%s: slices without position/orientation tags; geometry unchecked", folder)
        return _execute(reader, files, folder)
    checked = [h for h in headers if h is not None]
    order, positions = check_slice_geometry(checked, folder)
    files = [checked[i].file for i in order]
    distances = np.diff(positions)
    gaps = _irregular_gaps(distances)
    if not gaps:
        return _execute(reader, files, folder)
    if irregular_slices != "resample":
        raise VolumeError(_gap_message(folder, files, positions, distances, gaps))
    image = _execute(reader, files, folder)
    logger.warning(
        "%s: %s; resampled onto a regular grid through the true slice positions",
        folder,
        _gap_summary(files, positions, distances, gaps),
    )
    return resample_to_regular(image, positions)


_SERIES_DESCRIPTION = "0008|103e"
_SERIES_UID = "0020|000e"


def _describe_series(reader: Any, folder: Path, series: tuple[str, ...], shown: int = 4) -> str:
    """``'T1 axial' (120 files, UID 1.2...), ...`` for an error naming a folder's series."""
    parts = []
    for uid in series[:shown]:
        with _quiet_itk():
            files = reader.GetGDCMSeriesFileNames(str(folder), uid)
        description = _tag(Path(files[0]), _SERIES_DESCRIPTION) if files else None
        name = f"{description!r} " if description else ""
        parts.append(f"{name}({len(files)} file(s), e.g. {Path(files[0]).name}, UID {uid})")
    more = f", and {len(series) - shown} more" if len(series) > shown else ""
    return ", ".join(parts) + more


def _header_reader(file: Path) -> Any:
    """A SimpleITK reader holding ``file``'s header (no pixels); RuntimeError if unreadable."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(file))
    with _quiet_itk():
        reader.ReadImageInformation()
    return reader


def _tag(file: Path, key: str) -> str | None:
    """One DICOM tag of a file (stripped), or None when it is absent or unreadable."""
    try:
        reader = _header_reader(file)
    except RuntimeError:
        return None
    if not reader.HasMetaDataKey(key):
        return None
    return reader.GetMetaData(key).strip() or None


def series_of_file(file: Path) -> str | None:
    """The ``SeriesInstanceUID`` of a DICOM file when its folder holds more files of that
    series (so the file is one slice of a volume), else None."""
    import SimpleITK as sitk

    uid = _tag(file, _SERIES_UID)
    if uid is None:
        return None
    reader = sitk.ImageSeriesReader()
    with _quiet_itk():
        series = reader.GetGDCMSeriesIDs(str(file.parent)) or ()
        if uid not in series:
            return None
        files = reader.GetGDCMSeriesFileNames(str(file.parent), uid)
    return uid if len(files) > 1 else None


def _execute(reader: Any, files: list[Path], folder: Path) -> Any:
    reader.SetFileNames([str(f) for f in files])
    try:
        with _quiet_itk():
            return reader.Execute()
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise VolumeError(
            f"cannot read the DICOM series in {folder}: {lines[-1] if lines else exc}"
        ) from None


def _slice_header(file: Path) -> SliceHeader | None:
    try:
        reader = _header_reader(file)
    except RuntimeError:
        raise VolumeError(f"cannot read the DICOM slice {file} (corrupt or truncated)") from None
    keys = set(reader.GetMetaDataKeys())
    if not {_POSITION, _ORIENTATION} <= keys:
        return None
    try:
        position = np.array([float(v) for v in reader.GetMetaData(_POSITION).split("\\")])
        orientation = np.array([float(v) for v in reader.GetMetaData(_ORIENTATION).split("\\")])
        if _PIXEL_SPACING in keys:
            ps = [float(v) for v in reader.GetMetaData(_PIXEL_SPACING).split("\\")]
        else:
            ps = [1.0, 1.0]
        size = reader.GetSize()
    except ValueError:
        raise VolumeError(f"{file}: unreadable position/orientation tags") from None
    if position.shape != (3,) or orientation.shape != (6,) or len(ps) != 2:
        raise VolumeError(f"{file}: malformed position/orientation/pixel-spacing tags")
    return SliceHeader(file, position, orientation, (int(size[1]), int(size[0])), (ps[0], ps[1]))


def check_slice_geometry(headers: list[SliceHeader], folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Check that slices share orientation, size and pixel spacing, lie on one line along the
    slice normal, and are distinct.

    Returns:
        The slice order (ascending along the normal) and the sorted positions ``s`` in mm.

    Raises:
        VolumeError: naming the first offending slice file(s).
    """
    first = headers[0]
    for h in headers[1:]:
        if not np.allclose(h.orientation, first.orientation, atol=1e-4):
            raise VolumeError(
                f"{folder}: slices have different orientations ({first.file.name}: "
                f"{_fmt(first.orientation)}, {h.file.name}: {_fmt(h.orientation)}); not one volume"
            )
        if h.size != first.size:
            raise VolumeError(
                f"{folder}: slices have different sizes ({first.file.name}: {first.size}, "
                f"{h.file.name}: {h.size}); not one volume"
            )
        if not np.allclose(h.pixel_spacing, first.pixel_spacing, rtol=1e-4, atol=1e-6):
            raise VolumeError(
                f"{folder}: slices have different pixel spacings ({first.file.name}: "
                f"{first.pixel_spacing}, {h.file.name}: {h.pixel_spacing}); not one volume"
            )
    row, col = first.orientation[:3], first.orientation[3:]
    normal = np.cross(row, col)
    norm = float(np.linalg.norm(normal))
    if norm < 0.5:
        raise VolumeError(f"{folder}: ImageOrientationPatient {_fmt(first.orientation)} is invalid")
    normal /= norm
    s = np.array([float(h.position @ normal) for h in headers])
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    tol = _tolerance(np.diff(s_sorted))
    for a, b in zip(order[:-1], order[1:], strict=True):
        if abs(s[b] - s[a]) <= tol:
            raise VolumeError(
                f"{folder}: two slices at the same position ({headers[a].file.name} and "
                f"{headers[b].file.name}, {s[a]:g} mm along the slice normal); the folder mixes "
                "acquisitions"
            )
    base = headers[order[0]].position
    for i in order[1:]:
        offset = headers[i].position - base - (s[i] - s_sorted[0]) * normal
        if float(np.linalg.norm(offset)) > tol:
            raise VolumeError(
                f"{folder}: slice {headers[i].file.name} is shifted {np.linalg.norm(offset):.3g} "
                "mm within its plane (gantry tilt or sheared series); not supported"
            )
    return order, s_sorted


def _tolerance(distances: np.ndarray) -> float:
    positive = distances[distances > 0]
    typical = float(np.median(positive)) if positive.size else 1.0
    return max(0.02, 0.01 * typical)


def _irregular_gaps(distances: np.ndarray) -> list[int]:
    """Indices ``n`` where the distance between sorted slices ``n`` and ``n + 1`` is off."""
    typical = float(np.median(distances))
    tol = _tolerance(distances)
    return [n for n, d in enumerate(distances) if abs(d - typical) > tol]


def _gap_summary(
    files: list[Path], positions: np.ndarray, distances: np.ndarray, gaps: list[int]
) -> str:
    typical = float(np.median(distances))
    parts = []
    for n in gaps[:2]:
        d = float(distances[n])
        missing = round(d / typical) - 1
        whole = abs(d - (missing + 1) * typical) <= _tolerance(distances)
        hint = f", {missing} slice(s) missing?" if missing >= 1 and whole else ""
        parts.append(
            f"{d:.4g} mm between {files[n].name} and {files[n + 1].name} (at "
            f"{positions[n]:.4g} and {positions[n + 1]:.4g} mm{hint})"
        )
    more = f" and {len(gaps) - 2} more gap(s)" if len(gaps) > 2 else ""
    return f"slices are {typical:.4g} mm apart except {'; '.join(parts)}{more}"


def _gap_message(
    folder: Path, files: list[Path], positions: np.ndarray, distances: np.ndarray, gaps: list[int]
) -> str:
    unread = _unlisted_files(folder, files)
    extra = ""
    if unread:
        names = ", ".join(p.name for p in unread[:3]) + (", ..." if len(unread) > 3 else "")
        extra = f"; {len(unread)} file(s) here are not readable slices of it ({names})"
    return (
        f"{folder}: the DICOM series is not evenly spaced: "
        f"{_gap_summary(files, positions, distances, gaps)}{extra}; fix the series, or read it "
        "onto a regular grid through the true slice positions with --irregular-slices resample "
        "(segment, serve, predict; API: irregular_slices='resample')"
    )


def _unlisted_files(folder: Path, files: list[Path]) -> list[Path]:
    listed = {os.path.realpath(f) for f in files}
    out = []
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith(".") and p.name.upper() != "DICOMDIR":
            if os.path.realpath(p) not in listed:
                out.append(p)
    return out


def resample_to_regular(image: Any, positions: np.ndarray) -> Any:
    """Interpolate a stack of slices at sorted ``positions`` (mm) onto a regular grid.

    The grid starts at the first slice and ends at the last; its spacing is the smallest
    slice distance, stretched so a whole number of steps fits. Each grid slice is the linear
    interpolation of the two acquired slices around it (an acquired slice on a grid position
    is copied exactly).

    Args:
        image: SimpleITK image whose slices ``k`` lie at ``positions[k]`` along its third axis
            (origin at ``positions[0]``).
        positions: ``(K,)`` ascending positions in mm.

    Returns:
        A SimpleITK image with the same origin, direction and in-plane spacing.
    """
    import SimpleITK as sitk

    stack = sitk.GetArrayFromImage(image)  # (K, rows, cols)
    rel = positions - positions[0]
    total = float(rel[-1])
    step = float(np.min(np.diff(rel)))
    count = int(round(total / step)) + 1
    grid = np.linspace(0.0, total, count)
    upper = np.clip(np.searchsorted(rel, grid, side="left"), 1, len(rel) - 1)
    lower = upper - 1
    weight = (grid - rel[lower]) / (rel[upper] - rel[lower])
    tol = _tolerance(np.diff(rel))
    exact = np.isclose(weight, 0.0, atol=tol / step) | np.isclose(weight, 1.0, atol=tol / step)
    if exact.all():
        pick = np.where(weight > 0.5, upper, lower)
        out = stack[pick]
    else:
        w = weight.astype(np.float32)[:, None, None]
        out = (1 - w) * stack[lower].astype(np.float32) + w * stack[upper].astype(np.float32)
        snap = np.where(weight > 0.5, upper, lower)
        out[exact] = stack[snap[exact]]
    result = sitk.GetImageFromArray(np.ascontiguousarray(out))
    spacing = image.GetSpacing()
    result.SetSpacing((spacing[0], spacing[1], total / (count - 1)))
    result.SetOrigin(image.GetOrigin())
    result.SetDirection(image.GetDirection())
    for key in image.GetMetaDataKeys():
        result.SetMetaData(key, image.GetMetaData(key))
    return result


def _fmt(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


__all__ = ["SliceHeader", "check_slice_geometry", "read_dicom_series", "resample_to_regular"]
