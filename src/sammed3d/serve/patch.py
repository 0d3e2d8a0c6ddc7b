"""Changed-box replies: what a client must write so that its copy equals the server's.

Both front ends keep, per session, the volume as the client holds it (a mask or a label
map) as a :class:`Patch`: a box and its values, zero elsewhere. After each action
:func:`diff` compares the new volume with it inside a region known to hold every voxel that
can have changed, and returns the tight box of the changes and its new values. Nothing the
size of the whole image is compared or sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

Slices = tuple[slice, slice, slice]


@dataclass(frozen=True, eq=False)
class Patch:
    """``values`` at ``slices`` of a volume that is zero elsewhere."""

    slices: Slices
    values: np.ndarray

    @property
    def box(self) -> list[list[int]]:
        """``[[lo, hi], ...]`` half-open, per axis (the protocol's bbox format)."""
        return [[int(s.start), int(s.stop)] for s in self.slices]


def union(boxes: Iterable[Slices | None]) -> Slices | None:
    """Smallest box holding every non-empty box (None if there is none)."""
    los: list[Sequence[int]] = []
    his: list[Sequence[int]] = []
    for box in boxes:
        if box is None or any(s.stop <= s.start for s in box):
            continue
        los.append([s.start for s in box])
        his.append([s.stop for s in box])
    if not los:
        return None
    lo = np.min(los, axis=0)
    hi = np.max(his, axis=0)
    return (
        slice(int(lo[0]), int(hi[0])),
        slice(int(lo[1]), int(hi[1])),
        slice(int(lo[2]), int(hi[2])),
    )


def tight_box(mask: np.ndarray) -> Slices | None:
    """Bounding box of the True (non-zero) voxels of a 3-D array (None if there are none).

    Two passes over the array: one projection onto the first two axes, one onto the last.
    """
    if mask.size == 0:
        return None
    if mask.dtype != np.bool_:
        mask = mask != 0
    plane = mask.any(axis=2)
    rows = np.flatnonzero(plane.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(plane.any(axis=0))
    deep = np.flatnonzero(mask.any(axis=(0, 1)))
    return (
        slice(int(rows[0]), int(rows[-1]) + 1),
        slice(int(cols[0]), int(cols[-1]) + 1),
        slice(int(deep[0]), int(deep[-1]) + 1),
    )


def shift(box: Slices, origin: Sequence[int]) -> Slices:
    """``box`` (relative to ``origin``) in absolute indices."""
    return tuple(slice(s.start + o, s.stop + o) for s, o in zip(box, origin, strict=True))  # type: ignore[return-value]


def diff(
    current: np.ndarray, held: Patch | None, region: Slices | None
) -> tuple[Patch | None, Patch | None]:
    """Compare the new volume with what the client holds.

    Args:
        current: The new full volume (only ``region`` and ``held``'s box are read).
        held: What the client holds (zero outside its box), or None for all zeros.
        region: A box holding every voxel of ``current`` that may be non-zero.

    Returns:
        ``(change, now_held)``: the tight box of changed voxels with its new values (None if
        nothing changed), and the new held patch (tight box of the non-zero voxels).

    Cost: two passes over ``region`` (to find the new non-zero box) and a few over the
    union of the old and new non-zero boxes, never over the whole volume.
    """
    now_box = None
    if region is not None:
        inside = tight_box(current[region])
        if inside is not None:
            now_box = shift(inside, [s.start for s in region])
    area = union([now_box, held.slices if held is not None else None])
    if area is None:
        return None, None
    origin = [s.start for s in area]
    new = current[area]
    old = np.zeros(new.shape, dtype=current.dtype)
    if held is not None:
        old[
            tuple(slice(s.start - o, s.stop - o) for s, o in zip(held.slices, origin, strict=True))
        ] = held.values
    changed = tight_box(new != old)
    change = None
    if changed is not None:
        change = Patch(shift(changed, origin), np.ascontiguousarray(new[changed]))
    now_held = None
    if now_box is not None:
        now_held = Patch(now_box, np.array(current[now_box], copy=True))
    return change, now_held
