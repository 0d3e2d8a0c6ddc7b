"""Array-level pre-processing of the published pipeline (docs/faithfulness.md §5, §8).

Each function mirrors one torchio step of the published code, so the training cache, the
evaluator and the interactive predictor all share one implementation:

==========================  =====================================================
published (torchio)          here
==========================  =====================================================
``tio.ToCanonical()``        :func:`to_canonical`
``tio.Resample(1.5)``        :func:`resample` (grid: :func:`resampled_grid`)
``tio.CropOrPad(mask_name)`` :func:`crop_or_pad` + :func:`bbox_center` (and :class:`Roi`)
``tio.ZNormalization(x>0)``  :func:`zscore_foreground`
CT clamp of the loaders      :func:`ct_clamp`
==========================  =====================================================

Arrays are indexed in the voxel order of :mod:`sammed3d.io` (``array[i, j, k]``). Centres
passed to :func:`crop_or_pad` are **continuous voxel indices** (the centre of voxel ``n`` is
``n``), the same convention as every other coordinate in sammed3d.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

import numpy as np
import torch

from sammed3d.io import Volume, VolumeError, to_sitk

logger = logging.getLogger(__name__)

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

#: Target spacing of the published pipelines (mm).
DEFAULT_SPACING: tuple[float, float, float] = (1.5, 1.5, 1.5)
#: Crop size of the released models (voxels per side).
DEFAULT_ROI_SIZE = 128


@dataclass(frozen=True)
class Roi:
    """An axis-aligned box of voxel indices, possibly reaching outside the array.

    ``start`` may be negative and ``start + size`` may exceed the array shape: those parts
    were zero-padded by :func:`crop_or_pad` and are dropped again by :meth:`paste`.

    Args:
        start: First voxel index of the box along each of the three spatial axes.
        size: Box size along each axis.
    """

    start: tuple[int, int, int]
    size: tuple[int, int, int]

    def __post_init__(self) -> None:
        start = tuple(int(s) for s in self.start)
        size = tuple(int(s) for s in self.size)
        if len(start) != 3 or len(size) != 3:
            raise ValueError(f"Roi needs 3 start indices and 3 sizes, got {start} and {size}")
        if min(size) < 1:
            raise ValueError(f"Roi size must be positive, got {size}")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "size", size)

    @property
    def stop(self) -> tuple[int, int, int]:
        """Exclusive end index per axis."""
        return (
            self.start[0] + self.size[0],
            self.start[1] + self.size[1],
            self.start[2] + self.size[2],
        )

    @property
    def center(self) -> tuple[float, float, float]:
        """Geometric centre in continuous voxel indices."""
        return tuple(s + (n - 1) / 2 for s, n in zip(self.start, self.size, strict=True))  # type: ignore[return-value]

    def overlap(self, shape: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """Slices of the part inside an array of ``shape``: ``(in_array, in_roi)``.

        Either tuple may contain empty slices when the box lies outside the array.
        """
        src, dst = [], []
        for a in range(3):
            lo = max(self.start[a], 0)
            hi = min(self.stop[a], int(shape[a]))
            hi = max(hi, lo)
            src.append(slice(lo, hi))
            dst.append(slice(lo - self.start[a], hi - self.start[a]))
        return tuple(src), tuple(dst)

    def crop(self, array: ArrayT, pad_value: float = 0) -> ArrayT:
        """Cut this box out of ``array`` ``(..., I, J, K)``; outside voxels get ``pad_value``."""
        spatial = tuple(array.shape[-3:])
        src, dst = self.overlap(spatial)
        lead = tuple(array.shape[:-3])
        if isinstance(array, torch.Tensor):
            out = array.new_full(lead + self.size, pad_value)
        else:
            out = np.full(lead + self.size, pad_value, dtype=array.dtype)
        ell = (Ellipsis,)
        out[ell + dst] = array[ell + src]
        return out

    def paste(
        self,
        crop: ArrayT,
        shape: Sequence[int],
        fill: float = 0,
        out: ArrayT | None = None,
    ) -> ArrayT:
        """Inverse of :meth:`crop`: put ``crop`` back into an array of spatial ``shape``.

        Args:
            crop: ``(..., *size)`` values of this box.
            shape: Spatial shape of the full array.
            fill: Value outside the box (when ``out`` is None).
            out: Write into this array instead of a new one (only the box is touched).
        """
        if tuple(crop.shape[-3:]) != self.size:
            raise ValueError(
                f"crop has spatial shape {tuple(crop.shape[-3:])}, Roi size is {self.size}"
            )
        src, dst = self.overlap(shape)
        lead = tuple(crop.shape[:-3])
        if out is None:
            full = tuple(int(s) for s in shape)
            if isinstance(crop, torch.Tensor):
                out = crop.new_full(lead + full, fill)
            else:
                out = np.full(lead + full, fill, dtype=crop.dtype)
        ell = (Ellipsis,)
        out[ell + src] = crop[ell + dst]
        return out

    def shifted(self, offset: Sequence[int]) -> Roi:
        """The same box moved by ``offset`` voxels."""
        return Roi(tuple(s + int(o) for s, o in zip(self.start, offset, strict=True)), self.size)  # type: ignore[arg-type]


def _as_size3(size: int | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(size, int | np.integer):
        size = (int(size),) * 3
    out = tuple(int(s) for s in size)
    if len(out) != 3 or min(out) < 1:
        raise ValueError(f"size must be a positive int or three positive ints, got {size}")
    return out  # type: ignore[return-value]


def crop_start(center: float, size: int) -> int:
    """First index of a ``size``-long crop centred on ``center`` (torchio CropOrPad rule).

    ``center`` is a continuous voxel index, snapped to the nearest half voxel. torchio works
    with ``e = center + 0.5`` (voxel ``n`` spans ``[n, n + 1)``), shifts ``e`` by ``-0.5``
    when "size is even" XOR "``e`` is an integer", and starts at ``e - size / 2``. A crop
    of even size around voxel ``n`` therefore starts at ``n - size // 2`` (the voxel lands
    at index ``size // 2`` of the crop).
    """
    if not math.isfinite(center):
        raise ValueError(f"crop centre must be finite, got {center}")
    e = round(2.0 * (float(center) + 0.5)) / 2.0
    if (size % 2 == 0) ^ e.is_integer():
        e -= 0.5
    return int(round(e - size / 2))


def crop_or_pad(
    array: ArrayT,
    center: Sequence[int | float],
    size: int | Sequence[int] = DEFAULT_ROI_SIZE,
    pad_value: float = 0,
) -> tuple[ArrayT, Roi]:
    """Crop (and zero-pad where needed) a box of ``size`` centred on ``center``.

    Same result as ``tio.CropOrPad(size, mask_name=...)`` when ``center`` is
    :func:`bbox_center` of the mask (docs/faithfulness.md §5.1 step 5), and the same padding
    (``pad_value`` 0 in the published pipelines).

    Args:
        array: ``(..., I, J, K)`` numpy array or tensor; the last three axes are cropped.
        center: Continuous voxel index ``(i, j, k)`` of the crop centre.
        size: Crop size (one int for a cube, or three ints).
        pad_value: Value of voxels outside the array.

    Returns:
        The crop ``(..., *size)`` and the :class:`Roi` needed to paste it back.
    """
    if array.ndim < 3:
        raise ValueError(
            f"expected an array with at least 3 dims (..., I, J, K), got {tuple(array.shape)}"
        )
    c = [float(v) for v in center]
    if len(c) != 3:
        raise ValueError(f"center must have 3 coordinates, got {center}")
    size3 = _as_size3(size)
    roi = Roi(tuple(crop_start(c[a], size3[a]) for a in range(3)), size3)  # type: ignore[arg-type]
    return roi.crop(array, pad_value), roi


def bbox_slices(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of the True (non-zero) voxels of ``mask`` as slices (steps of 1, stop
    exclusive), one per axis; None when the mask is empty."""
    slices = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        nz = np.flatnonzero(mask.any(axis=other))
        if nz.size == 0:
            return None
        slices.append(slice(int(nz[0]), int(nz[-1]) + 1))
    return tuple(slices)


def bbox_center(mask: np.ndarray | torch.Tensor) -> tuple[float, float, float]:
    """Centre of the bounding box of the non-zero voxels, in continuous voxel indices.

    ``(bb_min + bb_max) / 2`` with inclusive bounds, i.e. torchio's ``mean(bb_min,
    bb_max_exclusive) - 0.5``; with :func:`crop_or_pad` it reproduces the centring of
    ``tio.CropOrPad(mask_name=...)``. Leading (channel) axes are collapsed.

    Raises:
        ValueError: the mask is empty (torchio would silently fall back to a centre crop).
    """
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim < 3:
        raise ValueError(f"expected a mask with at least 3 dims, got shape {mask.shape}")
    if mask.ndim > 3:
        mask = np.any(mask.reshape((-1,) + mask.shape[-3:]) != 0, axis=0)
    center = []
    for a in range(3):
        other = tuple(b for b in range(3) if b != a)
        hits = np.flatnonzero(np.any(mask, axis=other))
        if hits.size == 0:
            raise ValueError("cannot centre on an empty mask (no non-zero voxel)")
        center.append((hits[0] + hits[-1]) / 2.0)
    return (center[0], center[1], center[2])


def zscore_foreground(array: ArrayT) -> ArrayT:
    """Z-score with statistics of the voxels > 0 (``tio.ZNormalization(masking_method=x > 0)``).

    The mean and the unbiased standard deviation are computed over voxels ``> 0`` and then
    applied to all voxels. Returns float32 (a new array).

    Raises:
        ValueError: no voxel is > 0, or their standard deviation is 0.
    """
    is_tensor = isinstance(array, torch.Tensor)
    data = array.detach().to(torch.float32) if is_tensor else np.asarray(array, dtype=np.float32)
    values = data[data > 0]
    n = int(values.numel() if is_tensor else values.size)
    if n == 0:
        raise ValueError("z-score normalisation needs voxels > 0, found none")
    if is_tensor:
        mean = float(values.double().mean())
        std = float(values.double().std()) if n > 1 else 0.0
    else:
        v64 = values.astype(np.float64)
        mean = float(v64.mean())
        std = float(v64.std(ddof=1)) if n > 1 else 0.0
    if not math.isfinite(std) or std == 0.0:
        raise ValueError(
            f"z-score normalisation is undefined: the {n} voxel(s) > 0 all have the same value"
        )
    return (data - mean) / std  # type: ignore[return-value]


def ct_clamp(array: ArrayT, lo: float = -1000.0, hi: float = 1000.0) -> ArrayT:
    """Clip intensities to ``[lo, hi]`` (the CT convention of the published loaders)."""
    if lo >= hi:
        raise ValueError(f"ct_clamp needs lo < hi, got [{lo}, {hi}]")
    if isinstance(array, torch.Tensor):
        return array.clamp(lo, hi)
    return np.clip(array, lo, hi)


# ---------------------------------------------------------------------------------------
# Geometry: canonical orientation and resampling


class HasGeometry(Protocol):
    """Anything with a volume's geometry (a :class:`~sammed3d.io.Volume`, an inference grid)."""

    @property
    def shape(self) -> tuple[int, int, int]: ...

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray

    def index_to_physical(self, ijk: np.ndarray) -> np.ndarray: ...


def canonical_ornt(affine: np.ndarray) -> np.ndarray:
    """nibabel orientation ``(3, 2)`` that takes voxel axes to the closest RAS+ axes."""
    from nibabel.orientations import io_orientation

    return io_orientation(np.asarray(affine, dtype=np.float64))


def to_canonical(volume: Volume) -> Volume:
    """Reorient to the closest RAS+ voxel order (permutation and flips only, no resampling).

    Same as ``tio.ToCanonical()`` / ``nibabel.as_closest_canonical``: the voxel values are
    only transposed and flipped, and the geometry is updated so every voxel keeps its
    physical position. Oblique directions stay oblique.
    """
    from nibabel.orientations import apply_orientation, inv_ornt_aff

    ornt = canonical_ornt(volume.affine)
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return volume.with_array(volume.array)
    array = np.ascontiguousarray(apply_orientation(volume.array, ornt))
    affine = volume.affine @ inv_ornt_aff(ornt, volume.shape)
    return Volume.from_affine(array, affine)


#: Decimals to which ``size * old_spacing / new_spacing`` is snapped before the floor of
#: :func:`resampled_grid`: a voxel count, so 1e-4 is far below any real change of extent
#: and far above the float noise of stored spacings.
SIZE_DECIMALS = 4


def resampled_grid(
    volume: Volume | HasGeometry, spacing: Sequence[float] = DEFAULT_SPACING
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Shape and origin (LPS) of ``tio.Resample(spacing)``'s output grid (torchio >= 0.20).

    ``volume`` may be a :class:`~sammed3d.io.Volume` or any object with its geometry
    attributes (``shape``, ``spacing``, ``origin``, ``direction``, ``index_to_physical``).

    The new grid keeps the direction, has ``floor(size * old_spacing / spacing)`` voxels
    per axis (at least 1) and the same centre as the input (centre of the first and last
    voxel centres), so it never extends beyond the input's voxel centres by more than half
    a new voxel. The ratio is snapped to :data:`SIZE_DECIMALS` decimals before the floor,
    so that one scan gives one grid whatever file it came from: a DICOM series' slice
    spacing computed from positions (2.499999993 mm) or a NIfTI's float32 pixdim (0.9 is
    0.8999999762) would otherwise drop a voxel against the same scan stored with exact
    spacings, which moves every lattice voxel by half a new voxel (torchio floors the exact
    ratio; the two differ only for ratios within 1e-4 below a whole number).
    """
    new_spacing = np.asarray([float(s) for s in spacing], dtype=np.float64)
    if new_spacing.shape != (3,) or not np.all(new_spacing > 0):
        raise ValueError(f"spacing must be three positive numbers, got {spacing}")
    old_size = np.asarray(volume.shape, dtype=np.float64)
    old_spacing = np.asarray(volume.spacing, dtype=np.float64)
    new_size = np.floor(np.round(old_size * old_spacing / new_spacing, SIZE_DECIMALS))
    new_size = np.maximum(new_size, 1)
    new_size[old_size == 1] = 1
    first = np.asarray(volume.origin, dtype=np.float64)
    last = volume.index_to_physical(old_size - 1)
    center = (first + last) / 2
    origin = center - volume.direction @ ((new_size - 1) / 2 * new_spacing)
    shape = tuple(int(n) for n in new_size)
    return shape, tuple(float(o) for o in origin)  # type: ignore[return-value]


def resample(
    volume: Volume,
    spacing: Sequence[float] = DEFAULT_SPACING,
    *,
    interpolation: Literal["linear", "nearest"] = "linear",
) -> Volume:
    """Resample to ``spacing`` mm on the grid ``tio.Resample(spacing)`` would use.

    Args:
        volume: Input volume.
        spacing: Output spacing per voxel axis (mm).
        interpolation: ``"linear"`` for images (computed in float32, output float32) or
            ``"nearest"`` for label maps (dtype kept).

    Returns:
        The resampled volume (same direction; see :func:`resampled_grid`). Points outside
        the input get 0.
    """
    import SimpleITK as sitk

    if interpolation not in ("linear", "nearest"):
        raise ValueError(f"interpolation must be 'linear' or 'nearest', got {interpolation!r}")
    shape, origin = resampled_grid(volume, spacing)
    if interpolation == "linear":
        source = to_sitk(volume.with_array(volume.array.astype(np.float32, copy=False)))
        interp, pixel = sitk.sitkLinear, sitk.sitkFloat32
    else:
        source = to_sitk(volume)
        interp, pixel = sitk.sitkNearestNeighbor, source.GetPixelID()
    out = sitk.Resample(
        source,
        [int(s) for s in shape],
        sitk.Transform(),
        interp,
        origin,
        tuple(float(s) for s in spacing),
        tuple(float(d) for d in volume.direction.ravel()),
        0.0,
        pixel,
    )
    array = sitk.GetArrayFromImage(out).transpose(2, 1, 0)
    if volume.array.dtype == np.bool_ and interpolation == "nearest":
        array = array.astype(bool)
    try:
        return Volume(
            np.ascontiguousarray(array),
            tuple(float(s) for s in spacing),  # type: ignore[arg-type]
            origin,
            volume.direction.copy(),
        )
    except VolumeError as exc:  # pragma: no cover - geometry was validated on input
        raise VolumeError(f"resampling produced an invalid volume: {exc}") from None
