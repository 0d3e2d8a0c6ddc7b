"""Objects larger than one ROI: extension with overlapping ROIs, and stitching.

The published tool cuts every object at the faces of its 128³ (192 mm) crop. The paper
(§4.3) describes the rule implemented here: when the predicted mask touches a ROI face that
is not the border of the image, predict again in a ROI shifted by half a ROI (50 % overlap)
in that direction, prompted from the previous prediction, and stitch.

* A :class:`Tile` is one ROI's prediction (its low-res logits and its thresholded mask).
* :func:`touched_faces` finds the faces to extend through.
* :func:`extension_prompt` builds the prompt of the neighbouring ROI: the previous low-res
  logits shifted by half a ROI (the overlapping half; zeros, "no prior", elsewhere) and one
  positive click on the previous mask inside the overlap, as deep inside it as possible.
* :func:`grow` runs the extension breadth-first with a bound on the number of ROIs.
* :func:`stitch` merges tiles on their common lattice: each voxel takes the prediction of
  the covering ROI whose centre is nearest (for 50 % overlap, the middle of the overlap).

All ROIs of an image are boxes of one lattice (:mod:`sammed3d.inference.geometry`), so
shifts and stitching are exact integer operations.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from sammed3d.inference.geometry import RoiGrid, union_roi

logger = logging.getLogger(__name__)

TileSource = Literal["prompt", "extension"]


@dataclass(frozen=True, eq=False)
class Tile:
    """The prediction of one ROI.

    The thresholded mask is kept bit-packed (256 KB for a 128³ ROI) so that long undo
    histories stay small; :attr:`mask` unpacks it.

    Args:
        roi: Where the model looked.
        low_res_logits: ``(1, 1, l, l, l)`` raw logits (the next mask prompt for this ROI).
        packed_mask: ``np.packbits`` of the ``(S, S, S)`` bool mask (see :meth:`create`).
        source: ``"prompt"`` (user clicks) or ``"extension"`` (grown from ``parent``).
        parent: The ROI an extension tile was grown from.
        logits: ``(1, 1, S, S, S)`` upsampled logits, when requested.
    """

    roi: RoiGrid
    low_res_logits: torch.Tensor
    packed_mask: np.ndarray
    source: TileSource = "prompt"
    parent: RoiGrid | None = None
    logits: torch.Tensor | None = None

    @classmethod
    def create(
        cls,
        roi: RoiGrid,
        low_res_logits: torch.Tensor,
        mask: np.ndarray,
        source: TileSource = "prompt",
        parent: RoiGrid | None = None,
        logits: torch.Tensor | None = None,
    ) -> Tile:
        """Build from the ``(S, S, S)`` bool ROI mask (upsampled logits > 0)."""
        if tuple(mask.shape) != roi.size:
            raise ValueError(f"mask shape {mask.shape} != ROI size {roi.size}")
        packed = np.packbits(np.asarray(mask, dtype=bool), axis=None)
        return cls(roi, low_res_logits, packed, source, parent, logits)

    @property
    def mask(self) -> np.ndarray:
        """``(S, S, S)`` bool mask in ROI axes (unpacked on each access)."""
        n = int(np.prod(self.roi.size))
        return np.unpackbits(self.packed_mask, count=n).view(bool).reshape(self.roi.size)


#: ``run(roi, points (N, 3) ROI voxels, labels (N,), mask_input (1,1,l,l,l), parent) -> Tile``
TileRunner = Callable[[RoiGrid, np.ndarray, np.ndarray, torch.Tensor, RoiGrid], Tile]


def touched_faces(tile: Tile, min_voxels: int = 8) -> list[tuple[int, int]]:
    """Faces ``(axis, side)`` (side -1 low, +1 high) the mask touches inside the image.

    A face counts when at least ``min_voxels`` mask voxels lie on it, within the image,
    and the image continues beyond it (faces on or outside the image border never count).
    """
    roi = tile.roi
    shape = roi.lattice.shape
    valid = roi.valid
    mask = tile.mask
    faces = []
    for axis in range(3):
        for side in (-1, 1):
            if side < 0 and roi.start[axis] <= 0:
                continue
            if side > 0 and roi.stop[axis] >= shape[axis]:
                continue
            plane = list(valid)
            plane[axis] = slice(0, 1) if side < 0 else slice(roi.size[axis] - 1, roi.size[axis])
            if int(np.count_nonzero(mask[tuple(plane)])) >= min_voxels:
                faces.append((axis, side))
    return faces


def _shift_slices(axis: int, lo: int, hi: int) -> tuple[slice, ...]:
    out = [slice(None)] * 5
    out[2 + axis] = slice(lo, hi)
    return tuple(out)


def extension_prompt(tile: Tile, axis: int, side: int) -> tuple[RoiGrid, np.ndarray, torch.Tensor]:
    """Prompt for the neighbour of ``tile`` half a ROI away along ``axis`` (``side`` +-1).

    Returns:
        ``(roi, point (1, 3) int64 ROI voxel of the new ROI, mask_input (1, 1, l, l, l))``.

    Raises:
        ValueError: the tile's mask has no voxel in the overlap.
    """
    size = tile.roi.size[axis]
    stride = size // 2
    roi = tile.roi.shifted([side * stride if a == axis else 0 for a in range(3)])
    low = tile.low_res_logits
    cells_total = low.shape[2 + axis]
    if (stride * cells_total) % size:
        raise ValueError(f"half the ROI ({stride}) is not a whole number of low-res cells")
    cells = stride * cells_total // size
    shifted = torch.zeros_like(low)
    if side > 0:
        shifted[_shift_slices(axis, 0, cells_total - cells)] = low[
            _shift_slices(axis, cells, cells_total)
        ]
    else:
        shifted[_shift_slices(axis, cells, cells_total)] = low[
            _shift_slices(axis, 0, cells_total - cells)
        ]
    # the overlap, in the old tile's ROI indices, restricted to the image
    region = list(tile.roi.valid)
    lo, hi = (stride, size) if side > 0 else (0, size - stride)
    v = region[axis]
    region[axis] = slice(max(lo, v.start), min(hi, v.stop))
    point_old = deepest_voxel(tile.mask, tuple(region))
    if point_old is None:
        raise ValueError("the mask has no voxel in the overlap")
    point = point_old.copy()
    point[axis] -= side * stride
    return roi, point[None, :].astype(np.int64), shifted


def deepest_voxel(mask: np.ndarray, region: tuple[slice, ...]) -> np.ndarray | None:
    """The mask voxel of ``region`` farthest from the mask boundary (approximate, fast).

    The distance transform is taken on a 2x subsampled copy; the answer is then snapped to a
    true mask voxel. Returns ``(3,)`` int64 indices into ``mask``, or None if empty.
    """
    from scipy import ndimage

    sub = mask[region]
    if not sub.any():
        return None
    coarse = sub[::2, ::2, ::2]
    if coarse.any():
        dist = ndimage.distance_transform_edt(np.pad(coarse, 1))[1:-1, 1:-1, 1:-1]
        best = np.array(np.unravel_index(int(np.argmax(dist)), coarse.shape)) * 2
        if not sub[tuple(best)]:
            hits = np.argwhere(sub)
            best = hits[np.argmin(np.abs(hits - best).sum(axis=1))]
    else:
        hits = np.argwhere(sub)
        best = hits[len(hits) // 2]
    offset = np.array([s.start or 0 for s in region])
    return (best + offset).astype(np.int64)


def grow(
    run: TileRunner,
    seed: Tile,
    *,
    existing: Iterable[RoiGrid] = (),
    max_new: int = 7,
    min_face_voxels: int = 8,
    quiet: bool = False,
) -> list[Tile]:
    """Extend ``seed`` through every touched face, breadth-first, up to ``max_new`` ROIs.

    Args:
        run: Runs the model on one ROI (see :data:`TileRunner`).
        seed: The tile to grow from.
        existing: ROIs already predicted for this object (never predicted again).
        max_new: Bound on the number of new ROIs.
        min_face_voxels: See :func:`touched_faces`.
        quiet: Log the stop at ``max_new`` at debug level (default: info, which the CLI
            shows: the mask may be cut at a ROI face).

    Returns:
        The new tiles (empty predictions are dropped), in the order they were made.
    """
    seen = {r.key for r in existing} | {seed.roi.key}
    queue = [seed]
    new: list[Tile] = []
    while queue:
        tile = queue.pop(0)
        for axis, side in touched_faces(tile, min_face_voxels):
            step = tile.roi.size[axis] // 2
            key = tile.roi.shifted([side * step if a == axis else 0 for a in range(3)]).key
            if key in seen:
                continue
            if len(new) >= max_new:
                logger.log(
                    logging.DEBUG if quiet else logging.INFO,
                    "ROI extension stopped: the object reached its ROI budget (%d new ROI(s) "
                    "allowed for this click, --max-rois); its mask may be cut at a ROI face: "
                    "raise --max-rois (max_rois= of the predictor in Python) or click inside "
                    "the missing part",
                    max_new,
                )
                return new
            seen.add(key)
            try:
                roi, point, mask_input = extension_prompt(tile, axis, side)
            except ValueError:
                continue
            grown = run(roi, point, np.ones(1, dtype=np.int64), mask_input, tile.roi)
            if not grown.mask[grown.roi.valid].any():
                logger.debug("extension ROI %s is empty; dropped", roi)
                continue
            logger.debug("extended %s -> %s (axis %d, side %+d)", tile.roi, roi, axis, side)
            new.append(grown)
            queue.append(grown)
    return new


_DIST_CACHE: dict[tuple[int, int, int], np.ndarray] = {}

#: Tile layouts whose voxel ownership :func:`stitch` keeps (a click on an object of several
#: ROIs stitches the same ROIs again; one layout costs one byte per voxel of its union box).
OWNERSHIP_KEPT = 4

#: ``((offset in the union box, size) of each tile, in order)`` -> ``(union size, owner map)``
_Layout = tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]


def _center_distance(size: tuple[int, int, int]) -> np.ndarray:
    """Squared distance of each voxel of a box to the box centre, float32 (cached)."""
    if size not in _DIST_CACHE:
        axes = [(np.arange(n, dtype=np.float32) - (n - 1) / 2) ** 2 for n in size]
        _DIST_CACHE[size] = axes[0][:, None, None] + axes[1][None, :, None] + axes[2][None, None, :]
    return _DIST_CACHE[size]


def _box_slices(offset: Sequence[int], size: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(o, o + n) for o, n in zip(offset, size, strict=True))


@functools.lru_cache(maxsize=OWNERSHIP_KEPT)
def _ownership(layout: _Layout, union_size: tuple[int, ...]) -> np.ndarray:
    """Which tile each voxel of the union box takes its value from: the index (in
    ``layout``'s order) of the tile whose box centre is nearest, the first of equally near
    ones; -1 where no tile lies. ``(union_size)`` int8 or int16, read-only (cached)."""
    dtype = np.int8 if len(layout) < 128 else np.int16
    owner = np.full(union_size, -1, dtype=dtype)
    best = np.full(union_size, np.inf, dtype=np.float32)
    for index, (offset, size) in enumerate(layout):
        sl = _box_slices(offset, size)
        dist = _center_distance(size)  # type: ignore[arg-type]
        region_best = best[sl]
        closer = dist < region_best  # strictly: an earlier tile keeps a tie
        np.copyto(region_best, dist, where=closer)  # in place, without gathering the voxels
        np.copyto(owner[sl], index, where=closer)
    owner.flags.writeable = False
    return owner


def stitch(tiles: Sequence[Tile]) -> tuple[RoiGrid, np.ndarray]:
    """Merge tile masks on their lattice: nearest-ROI-centre wins where ROIs overlap.

    Equally near centres: the tile that comes first in ``tiles``. Which tile owns which
    voxel depends only on the tiles' boxes, so it is computed once per layout and kept
    (:data:`OWNERSHIP_KEPT` layouts).

    Returns:
        The union box and its ``(size)`` bool mask (voxels no tile covers are False).
    """
    if not tiles:
        raise ValueError("stitch needs at least one tile")
    if len(tiles) == 1:
        return tiles[0].roi, tiles[0].mask
    union = union_roi([t.roi for t in tiles])
    layout = tuple(
        (tuple(s - u for s, u in zip(t.roi.start, union.start, strict=True)), tuple(t.roi.size))
        for t in tiles
    )
    owner = _ownership(layout, tuple(union.size))
    out = np.zeros(union.size, dtype=bool)
    for index, (tile, (offset, size)) in enumerate(zip(tiles, layout, strict=True)):
        sl = _box_slices(offset, size)
        np.copyto(out[sl], tile.mask, where=owner[sl] == index)
    return union, out


def descendants(tiles: Sequence[Tile], root: RoiGrid) -> set[RoiGrid]:
    """ROIs of the extension tiles grown (directly or not) from ``root``."""
    children: dict[RoiGrid, list[RoiGrid]] = {}
    for t in tiles:
        if t.source == "extension" and t.parent is not None:
            children.setdefault(t.parent, []).append(t.roi)
    out: set[RoiGrid] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in out and child != root:
                out.add(child)
                stack.append(child)
    return out
