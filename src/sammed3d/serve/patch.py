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
    return (slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])), slice(int(lo[2]), int(hi[2])))


def tight_box(mask: np.ndarray) -> Slices | None:
    """Bounding box of the True voxels of a 3-D mask (None if there are none)."""
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if hits.size == 0:
            return None
        out.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return (out[0], out[1], out[2])


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
    """
    area = union([region, held.slices if held is not None else None])
    if area is None:
        return None, None
    origin = [s.start for s in area]
    new = current[area]
    old = np.zeros(new.shape, dtype=current.dtype)
    if held is not None:
        old[tuple(slice(s.start - o, s.stop - o) for s, o in zip(held.slices, origin, strict=True))] = held.values
    changed = tight_box(new != old)
    change = None
    if changed is not None:
        change = Patch(shift(changed, origin), np.ascontiguousarray(new[changed]))
    nonzero = tight_box(new != 0)
    now_held = None
    if nonzero is not None:
        now_held = Patch(shift(nonzero, origin), np.array(new[nonzero], copy=True))
    return change, now_held
