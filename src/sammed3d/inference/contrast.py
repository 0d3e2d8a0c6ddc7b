"""Border contrast of a mask, and the contrast guard built on it.

A first click is ambiguous, and a model that decodes several masks for it keeps the one with
the best predicted IoU x stability score (:meth:`SamMed3DPredictor.first_click_extents`).
That pick is sometimes a mask whose border follows no edge in the image: a brain-sized mask
for a click in a lesion or a ventricle, cut through tissue; and a later click sometimes blows
a good mask up into such a blur. Those masks have a low border contrast (the separation of a
mask's interior from a thin ring around it, :func:`border_contrast`), the clicked
structure's mask a high one. With ``contrast_guard`` set (:class:`~sammed3d.InteractiveSession`):

* first click: a pick whose contrast is below the guard gives way to the extent with the
  highest contrast, if that one is at least ``CONTRAST_RATIO`` times as high and at least
  the guard (:func:`contrast_pick`);
* later clicks: a mask more than ``GUARD_GROWTH`` times as large as before whose contrast is
  below the guard and below 1 / ``CONTRAST_RATIO`` of the previous mask's is not taken; the
  object keeps its mask, and the click goes to the model with the next one.

Chosen on the MNI152 tuning sets (docs/default_model.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

#: Width in native voxels of the ring outside a mask that its contrast compares against.
CONTRAST_RING_VOXELS = 2
#: A mask of fewer voxels (a 2-voxel cube) has no meaningful contrast: :func:`border_contrast`
#: gives it 0, so it never replaces a pick nor blocks a later click.
MIN_CONTRAST_VOXELS = 8
#: An alternative extent replaces a low-contrast pick only if its contrast is at least this
#: many times the pick's; a later click's mask is refused only if its contrast is below the
#: previous mask's divided by this.
CONTRAST_RATIO = 2.0
#: A later click's mask is checked only when it has more than this many times the voxels the
#: object had before the click.
GUARD_GROWTH = 2.0


def border_contrast(
    image: np.ndarray,
    slices: tuple[slice, ...],
    block: np.ndarray,
    ring: int = CONTRAST_RING_VOXELS,
) -> float:
    """How well a mask separates from its surroundings by intensity.

    ``|mean(inside) - mean(ring)| / (std(inside) + std(ring))``, the ring being the voxels
    within ``ring`` face-connected steps outside the mask (clipped to the image). A
    scale-free Fisher-like separation (cf. the two-region model of Chan and Vese 2001).

    Args:
        image: ``(I, J, K)`` native intensities (any real dtype).
        slices: Where ``block`` lies in ``image`` (native index slices).
        block: Bool mask of the shape those slices select.
        ring: Ring width in voxels (>= 1).

    Returns:
        The contrast (>= 0); 0 for a mask of fewer than ``MIN_CONTRAST_VOXELS`` voxels or one
        without any voxel around it.

    Raises:
        ValueError: ``block`` does not have the shape ``slices`` select, or ``ring`` < 1.
    """
    if ring < 1:
        raise ValueError(f"ring must be at least 1 voxel, got {ring}")
    shape = tuple(len(range(*s.indices(n))) for s, n in zip(slices, image.shape, strict=True))
    if block.shape != shape:
        raise ValueError(f"block has shape {block.shape}, slices select {shape}")
    if np.count_nonzero(block) < MIN_CONTRAST_VOXELS:
        return 0.0
    # the mask's own box, then that box grown by the ring (clipped to the image)
    own, grown, put = [], [], []
    for axis, s in enumerate(slices):
        hit = np.flatnonzero(block.any(axis=tuple(a for a in range(3) if a != axis)))
        first, last = int(hit[0]), int(hit[-1]) + 1
        offset = s.indices(image.shape[axis])[0]
        lo = max(offset + first - ring, 0)
        hi = min(offset + last + ring, image.shape[axis])
        own.append(slice(first, last))
        grown.append(slice(lo, hi))
        put.append(slice(offset + first - lo, offset + last - lo))
    native = tuple(grown)
    mask = np.zeros([g.stop - g.start for g in grown], dtype=bool)
    mask[tuple(put)] = block[tuple(own)]
    values = np.asarray(image[native], dtype=np.float64)
    around = ndimage.binary_dilation(mask, iterations=ring) & ~mask
    if not around.any():
        return 0.0
    inside, outside = values[mask], values[around]
    spread = inside.std() + outside.std()
    gap = abs(inside.mean() - outside.mean())
    if spread == 0:
        return 0.0 if gap == 0 else float("inf")
    return float(gap / spread)


def contrast_pick(contrasts: Sequence[float], picked: int, threshold: float) -> int:
    """The extent a first click gets under the contrast guard.

    Args:
        contrasts: :func:`border_contrast` of each extent.
        picked: Index of the model's own pick.
        threshold: ``contrast_guard``: a pick at or above it is kept (0: always kept).

    Returns:
        ``picked``, or the index of the highest-contrast extent when the pick's contrast is
        below ``threshold`` and that extent's is at least ``threshold`` and
        ``CONTRAST_RATIO`` times the pick's.
    """
    own = contrasts[picked]
    if threshold <= 0 or own >= threshold:
        return picked
    best = max(range(len(contrasts)), key=lambda n: contrasts[n])
    if best != picked and contrasts[best] >= max(threshold, CONTRAST_RATIO * own):
        return best
    return picked
