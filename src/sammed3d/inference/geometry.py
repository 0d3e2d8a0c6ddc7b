"""Index spaces of inference and the exact maps between them.

This module is the one place that defines which axis order each coordinate uses.

**native** ``(i, j, k)``
    Indices of ``Volume.array`` in ITK/NIfTI voxel order (see :mod:`sammed3d.io`): what
    users, the CLI (``--point I J K``), :class:`~sammed3d.SamMed3DPredictor` and
    :class:`~sammed3d.InteractiveSession` take and return.

**lattice** ``(u0, u1, u2)``
    The whole image as the published pipeline sees it: ``tio.Resample(1.5)`` followed by
    ``tio.ToCanonical()`` (docs/faithfulness.md §5.1 steps 3-4). Its axes are RAS+ (``u0``: L->R,
    ``u1``: P->A, ``u2``: I->S, up to the obliquity of the scan) with 1.5 mm voxels. It is
    never materialised; :class:`Lattice` only knows its geometry.

**ROI** ``(r0, r1, r2)``
    A box of the lattice, ``r = u - start`` (the published ``CropOrPad``; 128 voxels per
    side for the released models). The model's input tensor is ``(B, 1, r0, r1, r2)`` and
    point prompts ``(B, N, 3)`` are given in this same order, unchanged, as the published
    click generators do (docs/faithfulness.md §2.3, §2.6).

Because the lattice keeps the scan's direction cosines and only permutes/flips its axes,
native -> ROI is a *separable* map: each ROI axis depends on one native axis only. Pasting
a ROI mask back (nearest neighbour, as ``tio.Resample(target=original, nearest)``) is
therefore three 1-D gathers, and only native voxels inside the ROI are touched.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from sammed3d.data.transforms import (
    DEFAULT_SPACING,
    Roi,
    canonical_ornt,
    crop_start,
    resampled_grid,
)
from sammed3d.io import PhysicalGrid, Volume

logger = logging.getLogger(__name__)


#: Decimals to which a click's continuous voxel index is snapped before rounding: a click
#: typed in millimetres reaches its index through the file's spacing, stored as float32
#: (0.8 mm is 0.800000012), which moves a tie at voxel 137.5 to 137.4999979.
CLICK_DECIMALS = 4


def nearest_index(x: np.ndarray, decimals: int = 6) -> np.ndarray:
    """Nearest voxel index of continuous indices (ties round up, as ITK does).

    Values are first snapped to ``decimals`` decimals of a voxel (1e-6 by default) so that
    exact ties (frequent when spacings are commensurate, e.g. 0.75 vs 1.5 mm) do not depend
    on floating-point noise; clicks use :data:`CLICK_DECIMALS`.
    """
    return np.floor(np.round(np.asarray(x, dtype=np.float64), decimals) + 0.5)


@dataclass(frozen=True, eq=False)
class Grid(PhysicalGrid):
    """A regular 3-D voxel grid in physical space (ITK conventions, LPS+ mm): a
    :class:`~sammed3d.io.Volume` without voxels (index <-> physical maps from
    :class:`~sammed3d.io.PhysicalGrid`).

    Args:
        shape: Voxels per axis.
        spacing: Voxel size per axis (mm).
        origin: Physical position of voxel ``(0, 0, 0)``.
        direction: ``3 x 3`` direction cosines; column ``n`` is axis ``n``.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray

    @classmethod
    def of(cls, volume: Volume | Grid) -> Grid:
        """The grid of a volume."""
        return cls(
            tuple(int(s) for s in volume.shape),  # type: ignore[arg-type]
            tuple(float(s) for s in volume.spacing),  # type: ignore[arg-type]
            tuple(float(o) for o in volume.origin),  # type: ignore[arg-type]
            np.asarray(volume.direction, dtype=np.float64).reshape(3, 3).copy(),
        )

    def subgrid(self, start: Sequence[int], shape: Sequence[int]) -> Grid:
        """The grid of the box ``[start, start + shape)`` (``start`` may be negative)."""
        origin = self.index_to_physical(np.asarray(start, dtype=np.float64))
        return Grid(
            tuple(int(s) for s in shape),  # type: ignore[arg-type]
            self.spacing,
            tuple(float(o) for o in origin),  # type: ignore[arg-type]
            self.direction.copy(),
        )


@dataclass(frozen=True, eq=False)
class AxisMap:
    """Separable affine map between two grids: ``dst[b] = scale[b] * src[perm[b]] + offset[b]``."""

    perm: tuple[int, int, int]
    scale: tuple[float, float, float]
    offset: tuple[float, float, float]

    @classmethod
    def between(cls, src: Grid, dst: Grid) -> AxisMap:
        """Index map ``src -> dst``; raises if the grids are not axis-aligned to each other."""
        m = np.linalg.inv(dst.matrix) @ src.matrix
        b = np.linalg.inv(dst.matrix) @ (np.asarray(src.origin) - np.asarray(dst.origin))
        perm = tuple(int(np.argmax(np.abs(m[row]))) for row in range(3))
        scale = tuple(float(m[row, perm[row]]) for row in range(3))
        off_diag = np.abs(m).copy()
        for row in range(3):
            off_diag[row, perm[row]] = 0.0
        if sorted(perm) != [0, 1, 2] or off_diag.max() > 1e-6 * max(abs(s) for s in scale):
            raise ValueError(f"grids are not axis-aligned to each other (index map {m.tolist()})")
        return cls(perm, scale, tuple(float(v) for v in b))  # type: ignore[arg-type]

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Map ``(..., 3)`` continuous indices."""
        p = np.asarray(points, dtype=np.float64)
        return np.stack(
            [self.scale[b] * p[..., self.perm[b]] + self.offset[b] for b in range(3)], axis=-1
        )

    def inverse(self) -> AxisMap:
        """The map ``dst -> src``."""
        perm = [0, 0, 0]
        scale = [0.0, 0.0, 0.0]
        offset = [0.0, 0.0, 0.0]
        for b in range(3):
            a = self.perm[b]
            perm[a] = b
            scale[a] = 1.0 / self.scale[b]
            offset[a] = -self.offset[b] / self.scale[b]
        return AxisMap(tuple(perm), tuple(scale), tuple(offset))  # type: ignore[arg-type]


@dataclass(frozen=True, eq=False)
class Lattice:
    """The canonical resampled grid of a native image (never materialised).

    Same voxels as ``tio.ToCanonical()(tio.Resample(spacing)(image))``: the torchio
    resampling grid (:func:`~sammed3d.data.transforms.resampled_grid`) with its axes
    permuted and flipped to the closest RAS+ order.

    Args:
        grid: The canonical lattice grid (``shape`` = canonical shape).
        native: The native image grid.
    """

    grid: Grid
    native: Grid

    @classmethod
    def from_native(
        cls, native: Volume | Grid, spacing: Sequence[float] = DEFAULT_SPACING
    ) -> Lattice:
        """Build the lattice of ``native`` at ``spacing`` mm."""
        ngrid = Grid.of(native)
        shape, origin = resampled_grid(ngrid, spacing)
        resampled = Grid(shape, tuple(float(s) for s in spacing), origin, ngrid.direction.copy())  # type: ignore[arg-type]
        ornt = canonical_ornt(resampled.affine)
        cshape = [0, 0, 0]
        cspacing = [0.0, 0.0, 0.0]
        cdir = np.zeros((3, 3))
        corner = np.zeros(3)
        for a in range(3):  # resampled axis a -> canonical axis b, flipped if ornt[a,1] < 0
            b, sign = int(ornt[a, 0]), float(ornt[a, 1])
            cshape[b] = shape[a]
            cspacing[b] = float(spacing[a])
            cdir[:, b] = resampled.direction[:, a] * sign
            corner[a] = 0.0 if sign > 0 else shape[a] - 1
        corigin = resampled.index_to_physical(corner)
        grid = Grid(
            tuple(cshape),  # type: ignore[arg-type]
            tuple(cspacing),  # type: ignore[arg-type]
            tuple(float(o) for o in corigin),  # type: ignore[arg-type]
            cdir,
        )
        return cls(grid, ngrid)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.grid.shape

    def native_to_lattice(self, ijk: np.ndarray) -> np.ndarray:
        """Native continuous indices ``(..., 3)`` -> lattice continuous indices."""
        return self.grid.physical_to_index(self.native.index_to_physical(ijk))

    def lattice_to_native(self, u: np.ndarray) -> np.ndarray:
        """Lattice continuous indices ``(..., 3)`` -> native continuous indices."""
        return self.native.physical_to_index(self.grid.index_to_physical(u))

    def roi(self, start: Sequence[int], size: int | Sequence[int]) -> RoiGrid:
        """The ROI ``[start, start + size)`` of this lattice."""
        if isinstance(size, int | np.integer):
            size = (int(size),) * 3
        return RoiGrid(self, tuple(int(s) for s in start), tuple(int(s) for s in size))  # type: ignore[arg-type]

    def roi_around(self, center_u: Sequence[float], size: int | Sequence[int]) -> RoiGrid:
        """ROI centred on a continuous *lattice* index with the torchio CropOrPad rule."""
        size3 = (int(size),) * 3 if isinstance(size, int | np.integer) else tuple(size)
        start = [crop_start(float(center_u[a]), int(size3[a])) for a in range(3)]
        return self.roi(start, size3)

    def roi_at(self, ijk: Sequence[float], size: int | Sequence[int]) -> RoiGrid:
        """ROI centred on a *native* voxel, as if it were a one-voxel ground-truth mask.

        The voxel is mapped to its nearest lattice voxel ``v`` (what nearest-neighbour
        resampling of that mask gives) and the crop is centred on it, so for an even size
        ``v`` sits at index ``size // 2`` of the ROI.
        """
        u = nearest_index(self.native_to_lattice(np.asarray(ijk, dtype=np.float64)))
        return self.roi_around(u, size)


@dataclass(frozen=True, eq=False)
class RoiGrid:
    """A box of a :class:`Lattice`: the geometry of one model input.

    Two RoiGrids are equal when they are the same box of the same lattice (``key``).

    Args:
        lattice: The lattice the box belongs to.
        start: First lattice index per axis (may be negative: padded).
        size: Voxels per axis (the model's ``img_size`` for model inputs).
    """

    lattice: Lattice
    start: tuple[int, int, int]
    size: tuple[int, int, int]

    @property
    def key(self) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """Hashable identity within its lattice: ``(start, size)``."""
        return (self.start, self.size)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RoiGrid):
            return NotImplemented
        return self.lattice is other.lattice and self.key == other.key

    def __hash__(self) -> int:
        return hash((id(self.lattice), self.key))

    def __repr__(self) -> str:
        return f"RoiGrid(start={self.start}, size={self.size}, lattice_shape={self.lattice.shape})"

    @property
    def box(self) -> Roi:
        """The box as a :class:`~sammed3d.data.transforms.Roi` of lattice indices."""
        return Roi(self.start, self.size)

    @property
    def stop(self) -> tuple[int, int, int]:
        return self.box.stop

    @property
    def grid(self) -> Grid:
        """Physical grid of the ROI (its voxel ``(0, 0, 0)`` is lattice voxel ``start``)."""
        return self.lattice.grid.subgrid(self.start, self.size)

    @property
    def valid(self) -> tuple[slice, slice, slice]:
        """Slices (ROI indices) of the part inside the lattice; the rest is padding."""
        return self.box.overlap(self.lattice.shape)[1]  # type: ignore[return-value]

    def shifted(self, delta: Sequence[int]) -> RoiGrid:
        """The same-sized box moved by ``delta`` lattice voxels."""
        return self.lattice.roi(
            [s + int(d) for s, d in zip(self.start, delta, strict=True)], self.size
        )

    # --- points --------------------------------------------------------------------------

    def native_to_roi(self, ijk: np.ndarray) -> np.ndarray:
        """Native continuous indices ``(..., 3)`` -> ROI continuous indices ``(..., 3)``."""
        return self.lattice.native_to_lattice(ijk) - np.asarray(self.start, dtype=np.float64)

    def roi_to_native(self, r: np.ndarray) -> np.ndarray:
        """ROI continuous indices ``(..., 3)`` -> native continuous indices ``(..., 3)``."""
        return self.lattice.lattice_to_native(
            np.asarray(r, dtype=np.float64) + np.asarray(self.start, dtype=np.float64)
        )

    def native_points_to_voxels(self, ijk: np.ndarray) -> np.ndarray:
        """Native points ``(N, 3)`` -> nearest ROI voxel ``(N, 3)`` int64 (prompt coords)."""
        return nearest_index(self.native_to_roi(ijk)).astype(np.int64)

    def contains_native(self, ijk: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Whether native points ``(..., 3)`` fall on ROI voxels at least ``margin`` from a face."""
        r = nearest_index(self.native_to_roi(ijk))
        size = np.asarray(self.size)
        return np.all((r >= margin) & (r <= size - 1 - margin), axis=-1)

    # --- volumes -------------------------------------------------------------------------

    def _native_map(self) -> AxisMap:
        """Separable map native index -> ROI index."""
        return AxisMap.between(self.lattice.native, self.grid)

    def native_block(self, margin: int = 1) -> tuple[slice, slice, slice]:
        """Native slices covering this ROI plus ``margin`` voxels (clipped to the image)."""
        inv = self._native_map().inverse()  # ROI -> native
        corners = np.array(
            [
                [x, y, z]
                for x in (-0.5, self.size[0] - 0.5)
                for y in (-0.5, self.size[1] - 0.5)
                for z in (-0.5, self.size[2] - 0.5)
            ]
        )
        nat = inv.apply(corners)
        shape = self.lattice.native.shape
        out = []
        for a in range(3):
            lo = max(int(np.floor(nat[:, a].min())) - margin, 0)
            hi = min(int(np.ceil(nat[:, a].max())) + margin + 1, shape[a])
            out.append(slice(lo, max(lo, hi)))
        return (out[0], out[1], out[2])

    def resample_from_native(
        self,
        array: np.ndarray,
        interpolation: Literal["linear", "nearest"] = "linear",
        *,
        zero_outside_lattice: bool = True,
    ) -> np.ndarray:
        """Values of a native array on this ROI's voxels, ``(r0, r1, r2)``.

        Only the native block under the ROI is read (SimpleITK, linear in float32 or
        nearest keeping the dtype; a ROI whose voxels are native voxels is copied instead).
        Points outside the image get 0; with ``zero_outside_lattice`` so do ROI voxels
        outside the lattice, exactly like the zero padding of the published ``CropOrPad``
        after ``Resample``.
        """
        native = self.lattice.native
        if tuple(array.shape) != native.shape:
            raise ValueError(f"array shape {array.shape} != image shape {native.shape}")
        if interpolation not in ("linear", "nearest"):
            raise ValueError(f"interpolation must be 'linear' or 'nearest', got {interpolation!r}")
        out_dtype = np.float32 if interpolation == "linear" else array.dtype
        copied = self._copy_from_native(array, out_dtype)
        if copied is not None:
            result = copied
        else:
            result = self._resample_block(array, interpolation, out_dtype)
        if zero_outside_lattice:
            valid = self.valid
            for axis, keep in enumerate(valid):  # zero the padding slabs in place
                before = [slice(None)] * 3
                before[axis] = slice(0, keep.start)
                result[tuple(before)] = 0
                before[axis] = slice(keep.stop, None)
                result[tuple(before)] = 0
        return result

    def _copy_from_native(self, array: np.ndarray, out_dtype: np.dtype) -> np.ndarray | None:
        """The ROI's values when each ROI voxel is a native voxel (same spacing, axes at most
        permuted or flipped, a whole-voxel offset: a 1 mm zoom ROI of a 1 mm image): a copy
        of the native voxels under it, 0 where the ROI leaves the image; interpolation would
        give these values up to float rounding of the voxel positions (~1e-7 relative).
        None for any other ROI."""
        try:
            to_native = self._native_map().inverse()  # ROI index -> native index
        except ValueError:
            return None
        offsets = np.asarray(to_native.offset)
        if np.any(np.abs(np.abs(np.asarray(to_native.scale)) - 1.0) > 1e-9) or np.any(
            np.abs(offsets - np.round(offsets)) > 1e-6
        ):
            return None
        shape = self.lattice.native.shape
        take = [slice(None)] * 3  # native slices
        put = [slice(None)] * 3  # ROI slices
        order = [0, 0, 0]  # ROI axis r holds native axis order[r]
        for a in range(3):  # native index along a = step * (ROI index along r) + first
            r = to_native.perm[a]
            step = int(round(to_native.scale[a]))
            first = int(round(to_native.offset[a]))
            # ROI indices i in [0, n) with 0 <= first + step * i < shape[a]
            lo, hi = (-first, shape[a] - first) if step > 0 else (first - shape[a] + 1, first + 1)
            lo, hi = max(lo, 0), min(hi, self.size[r])
            if hi <= lo:
                return np.zeros(self.size, dtype=out_dtype)
            stop = first + step * hi
            take[a] = slice(first + step * lo, stop if stop >= 0 else None, step)
            put[r] = slice(lo, hi)
            order[r] = a
        values = array[tuple(take)].transpose(order)
        result = np.zeros(self.size, dtype=out_dtype)
        result[tuple(put)] = values
        return result

    def _resample_block(
        self, array: np.ndarray, interpolation: str, out_dtype: np.dtype
    ) -> np.ndarray:
        """:meth:`resample_from_native` by SimpleITK on the native block under the ROI."""
        import SimpleITK as sitk

        native = self.lattice.native
        block = self.native_block(margin=1)
        if any(s.stop <= s.start for s in block):
            return np.zeros(self.size, dtype=out_dtype)
        sub = array[block]
        # linear: the block goes to SimpleITK as it lies in memory, which reads a C-ordered
        # array's last axis as x, with the axes of the block and of the ROI grid reversed in
        # the geometry: the same physical points, without transposing the block or the
        # result. The values equal the transposed way's on 1,000 random grids; on some grids
        # (a 1 mm ROI of a 1.5 mm image) a few differ by float rounding (~1e-7 relative).
        # Nearest keeps the transposed way: its ties at half a voxel can round the other way
        # when the axes are reversed.
        flip = interpolation == "linear"
        if flip:
            src = np.ascontiguousarray(sub, dtype=np.float32)
        else:
            src = np.ascontiguousarray(
                (sub.astype(np.uint8) if sub.dtype == np.bool_ else sub).transpose(2, 1, 0)
            )
        axes = slice(None, None, -1) if flip else slice(None)
        image = sitk.GetImageFromArray(src)
        start = [s.start for s in block]
        image.SetOrigin(tuple(float(v) for v in native.index_to_physical(np.asarray(start))))
        image.SetSpacing(tuple(float(s) for s in np.asarray(native.spacing)[axes]))
        image.SetDirection(tuple(float(d) for d in native.direction[:, axes].ravel()))
        grid = self.grid
        out = sitk.Resample(
            image,
            [int(s) for s in np.asarray(self.size)[axes]],
            sitk.Transform(),
            sitk.sitkLinear if flip else sitk.sitkNearestNeighbor,
            tuple(float(o) for o in grid.origin),
            tuple(float(s) for s in np.asarray(grid.spacing)[axes]),
            tuple(float(d) for d in grid.direction[:, axes].ravel()),
            0.0,
            image.GetPixelID(),
        )
        result = sitk.GetArrayFromImage(out)  # C-ordered: (r0, r1, r2) when flipped
        if not flip:
            result = np.ascontiguousarray(result.transpose(2, 1, 0))
        if array.dtype == np.bool_:
            result = result.astype(bool)
        return result

    def paste_to_native(
        self, roi_array: np.ndarray, within: Sequence[slice] | None = None
    ) -> tuple[tuple[slice, slice, slice], np.ndarray]:
        """Nearest-neighbour values of a ROI array on the native voxels it covers.

        Matches ``tio.Resample(target=<native grid>, nearest)`` of the ROI image
        (docs/faithfulness.md §5.1 step 10) for every native voxel whose nearest ROI voxel lies
        in the ROI; native voxels outside are not part of the result.

        Args:
            roi_array: ``(r0, r1, r2)`` values (``size`` of this ROI).
            within: ROI index slices (steps of 1) of the part to paste, e.g. the box of a
                mask's True voxels: only the native voxels whose nearest ROI voxel lies in
                it are returned (the same values there as without it). None: the whole ROI.

        Returns:
            ``(slices, block)``: the native index box and its values (same dtype), so that
            ``native[slices] = block`` pastes. Empty slices when the ROI (or ``within``)
            misses the image.

        Raises:
            ValueError: ``roi_array`` is not of the ROI's size; ``within`` is not three
                slices of steps 1 inside the ROI.
        """
        if tuple(roi_array.shape) != self.size:
            raise ValueError(f"ROI array has shape {roi_array.shape}, expected {self.size}")
        box = [(0, n) for n in self.size]
        if within is not None:
            if len(within) != 3:
                raise ValueError(f"within must be 3 slices, got {within!r}")
            for b, (sl, n) in enumerate(zip(within, self.size, strict=True)):
                lo, hi, step = sl.indices(n)
                if step != 1 or hi <= lo:
                    raise ValueError(f"within must be non-empty slices of step 1, got {within!r}")
                box[b] = (lo, hi)
            roi_array = roi_array[tuple(slice(lo, hi) for lo, hi in box)]
        amap = self._native_map()
        native_shape = self.lattice.native.shape
        # roi axis b depends on native axis perm[b]; order the array by native axis
        to_native = [0, 0, 0]
        for b in range(3):
            to_native[amap.perm[b]] = b
        arr = roi_array.transpose(to_native)
        slices: list[slice] = []
        gathers: list[np.ndarray] = []
        for q in range(3):
            b = to_native[q]
            n = np.arange(native_shape[q], dtype=np.float64)
            r = amap.scale[b] * n + amap.offset[b]
            idx = nearest_index(r)
            first, stop = box[b]
            inside = np.flatnonzero((idx >= first) & (idx <= stop - 1))
            if inside.size == 0:
                empty = (slice(0, 0),) * 3
                return empty, np.zeros((0, 0, 0), dtype=roi_array.dtype)  # type: ignore[return-value]
            lo, hi = int(inside[0]), int(inside[-1]) + 1
            slices.append(slice(lo, hi))
            gathers.append((idx[lo:hi] - first).astype(np.intp))
        # gather along the axis that grows least first, to keep intermediates small
        order = sorted(range(3), key=lambda q: len(gathers[q]) / arr.shape[q])
        for q in order:
            arr = np.take(arr, gathers[q], axis=q)
        return (slices[0], slices[1], slices[2]), np.ascontiguousarray(arr)


def union_roi(rois: Sequence[RoiGrid]) -> RoiGrid:
    """Smallest lattice box holding every ROI (all from the same lattice)."""
    if not rois:
        raise ValueError("union_roi needs at least one ROI")
    lattice = rois[0].lattice
    if any(r.lattice is not lattice for r in rois):
        raise ValueError("ROIs belong to different images")
    lo = np.min([r.start for r in rois], axis=0)
    hi = np.max([r.stop for r in rois], axis=0)
    return lattice.roi(lo.tolist(), (hi - lo).tolist())
