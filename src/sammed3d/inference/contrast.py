"""Border contrast and edge strength of a mask, and the first-click rules built on them.

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

With ``first_pick="edges"`` (the edge pick) the first click instead always gets the extent
with the highest :func:`edge_score`, whatever the model's own ranking: the model proposes the
masks, the image's edges choose among them; extents whose inside is unlike the clicked voxels
(:func:`click_like_inside`: an organ mask around a clicked lesion, or a brain-sized mask
whose voxels around the clicked lesion are tissue) are passed over. The
guard's first-click half is then not applied; its later-click half is.

With ``later_check="edges"`` (the edge check) a later click whose mask's edge score
(:func:`mask_edge_score`) falls below ``LATER_POSITIVE_KEEP`` (a positive click) or
``LATER_NEGATIVE_KEEP`` (a negative one) of the previous mask's is refused
(:func:`later_click_refused`): the object keeps its mask and the click is not kept, so it
does not reach the model with the next one either. A mask that loses its edges at a click
had mostly lost Dice there on the tuning chains (a good mask leaking into the tissue around
it at a positive click, or collapsing at a negative one). The contrast guard's later-click
half then acts on the clicks the edge check lets through. Not on in the bundled model: held
out it also refused right answers (a small first mask in the whole brain growing to the
brain at the next positive clicks: the brain's border is the weaker edge), and the mean Dice
at 3 and 5 clicks fell.

Every neighbourhood here (the contrast ring, the edge window, the click's block and the
cube around it) is set in voxels of the image's finest axis; along a coarser axis it spans
about the same millimetres in fewer voxels (:func:`axis_steps`), so that on 3 mm slices a
click's block does not reach 3 mm above and below it. On isotropic images, the kind the
rules were chosen on, this is the voxel count as given.

Chosen on the MNI152 tuning sets and generated validation crops (docs/default_model.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

#: Width in native voxels (of the finest axis) of the ring outside a mask that its contrast
#: compares against.
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
#: Side in voxels (of the finest axis) of the window in which :func:`edge_strength` compares
#: a boundary voxel's neighbours inside the mask with those outside it.
EDGE_WINDOW = 5
#: :func:`edge_strength` reads at most this many boundary voxels (a regular subsample).
EDGE_SAMPLES = 20_000
#: A window straddles the boundary when more than this share and less than one minus this
#: share of it lies inside the mask; only such windows count.
EDGE_MIXED = 0.05
#: The edge pick passes over an extent whose inside is unlike the clicked voxels: the mean of
#: the click's block (``CLICK_BLOCK_VOXELS`` each side), and its median, lie
#: more than this many (robust) standard deviations of the inside from the inside's median
#: (a lesion's click in an organ mask around it).
CLICK_LIKE_SDS = 2.5
#: The edge check refuses a positive later click whose mask's edge score is below this share
#: of the previous mask's (on the tuning chains, 26 of the 29 positive clicks below 0.7 had
#: lowered Dice by more than 0.05; between 0.7 and 0.9, 7 of 22, with 3 gains).
LATER_POSITIVE_KEEP = 0.7
#: The same for a negative later click (below 0.3: mean Dice change -0.16 over 13 clicks;
#: between 0.3 and 0.7 as many gains as falls).
LATER_NEGATIVE_KEEP = 0.3
#: :func:`click_like_inside` also compares the click with the inside voxels within this many
#: voxels of it (a cube): a lesion is unlike the tissue right around it even when a
#: brain-sized mask's whole inside spans the lesion's intensity.
CLICK_NEAR_VOXELS = 8
#: Half-side in voxels of the click's block whose mean :func:`click_inside_z` compares (1:
#: 3x3x3 on an isotropic image).
CLICK_BLOCK_VOXELS = 1
#: Interquartile range of a normal distribution in standard deviations.
IQR_PER_SD = 1.349
#: :func:`click_like_inside` reads at most this many inside voxels (a regular subsample).
INSIDE_SAMPLES = 200_000


def axis_steps(
    steps: int, spacing: Sequence[float] | None, at_least: int = 0
) -> tuple[int, int, int]:
    """A neighbourhood's half-side per axis: ``steps`` voxels of the finest axis, and along
    each coarser axis about as many millimetres, ``round(steps * finest / spacing)``.

    Args:
        steps: Voxels along the finest axis (>= 0).
        spacing: ``(si, sj, sk)`` in mm, in the image's axis order; None: isotropic.
        at_least: Lower bound of every axis's count.

    Returns:
        ``(ni, nj, nk)``; ``(steps,) * 3`` for an isotropic image.

    Raises:
        ValueError: ``steps`` < 0, or ``spacing`` is not three positive numbers.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0 voxels, got {steps}")
    if spacing is None:
        return (max(steps, at_least),) * 3
    sp = tuple(float(v) for v in spacing)
    if len(sp) != 3 or not all(v > 0 for v in sp):
        raise ValueError(f"spacing must be three positive numbers in mm, got {tuple(spacing)}")
    finest = min(sp)
    # half up, not to even: 2.5 voxels of the finest axis is 3, as a reader would expect
    i, j, k = (max(int(np.floor(steps * finest / v + 0.5)), at_least) for v in sp)
    return i, j, k


def _ring_dilation(mask: np.ndarray, steps: tuple[int, int, int]) -> np.ndarray:
    """``mask`` dilated by ``steps`` face-connected steps per axis: a voxel joins when some
    mask voxel lies within ``sum(|d_a| / steps_a) <= 1`` of it (the L1 ball of those radii;
    :func:`face_dilation` when all three are equal). Every step >= 1."""
    if len(set(steps)) == 1:
        return face_dilation(mask, steps[0])
    grids = np.meshgrid(*(np.arange(-n, n + 1) for n in steps), indexing="ij")
    reach = sum(np.abs(g) / n for g, n in zip(grids, steps, strict=True))
    return ndimage.binary_dilation(mask, structure=np.asarray(reach) <= 1 + 1e-9)


def border_contrast(
    image: np.ndarray,
    slices: tuple[slice, ...],
    block: np.ndarray,
    ring: int = CONTRAST_RING_VOXELS,
    spacing: Sequence[float] | None = None,
) -> float:
    """How well a mask separates from its surroundings by intensity.

    ``|mean(inside) - mean(ring)| / (std(inside) + std(ring))``, the ring being the voxels
    within ``ring`` face-connected steps outside the mask (clipped to the image; fewer steps
    along a coarser axis, :func:`axis_steps`). A
    scale-free Fisher-like separation (cf. the two-region model of Chan and Vese 2001).

    Args:
        image: ``(I, J, K)`` native intensities (any real dtype).
        slices: Where ``block`` lies in ``image`` (native index slices).
        block: Bool mask of the shape those slices select.
        ring: Ring width in voxels of the finest axis (>= 1; at least 1 along every axis).
        spacing: ``(si, sj, sk)`` of ``image`` in mm; None: isotropic.

    Returns:
        The contrast (>= 0); 0 for a mask of fewer than ``MIN_CONTRAST_VOXELS`` voxels or one
        without any voxel around it.

    Raises:
        ValueError: ``block`` does not have the shape ``slices`` select, ``ring`` < 1, or a
            bad ``spacing``.
    """
    if ring < 1:
        raise ValueError(f"ring must be at least 1 voxel, got {ring}")
    _check_block(image, slices, block)
    if np.count_nonzero(block) < MIN_CONTRAST_VOXELS:
        return 0.0
    steps = axis_steps(ring, spacing, at_least=1)
    native, mask, _ = _grown_box(image.shape, slices, block, steps)
    values = np.asarray(image[native], dtype=np.float64)
    around = _ring_dilation(mask, steps) & ~mask
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


def _grown_box(
    image_shape: tuple[int, ...],
    slices: tuple[slice, ...],
    block: np.ndarray,
    margins: tuple[int, int, int],
) -> tuple[tuple[slice, ...], np.ndarray, list[tuple[int, int]]]:
    """The mask's own box grown by ``margins`` (voxels per axis; clipped to the image): its
    native slices, the mask there, and per axis how many voxels the clipping took off (low,
    high side)."""
    own, grown, put, clipped = [], [], [], []
    for axis, (s, margin) in enumerate(zip(slices, margins, strict=True)):
        hit = np.flatnonzero(block.any(axis=tuple(a for a in range(3) if a != axis)))
        first, last = int(hit[0]), int(hit[-1]) + 1
        offset = s.indices(image_shape[axis])[0]
        lo = max(offset + first - margin, 0)
        hi = min(offset + last + margin, image_shape[axis])
        own.append(slice(first, last))
        grown.append(slice(lo, hi))
        put.append(slice(offset + first - lo, offset + last - lo))
        clipped.append((lo - (offset + first - margin), offset + last + margin - hi))
    mask = np.zeros([g.stop - g.start for g in grown], dtype=bool)
    mask[tuple(put)] = block[tuple(own)]
    return tuple(grown), mask, clipped


def face_dilation(mask: np.ndarray, steps: int = 1) -> np.ndarray:
    """``scipy.ndimage.binary_dilation(mask, iterations=steps)`` (face neighbours, nothing
    beyond the array), by shifted slices: the same voxels, 3-5x faster on the
    multi-million-voxel masks of a large organ. ``mask``: bool, any number of axes."""
    out = np.array(mask, dtype=bool)  # a copy, also for steps 0
    for _ in range(steps):
        grown = out.copy()
        for lo, hi in _face_shifts(out.ndim):
            grown[hi] |= out[lo]
            grown[lo] |= out[hi]
        out = grown
    return out


def face_erosion(mask: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_erosion(mask)`` (face neighbours; beyond the array counts as
    outside, so the array's faces are eroded), by shifted slices: the same voxels, faster.
    ``mask``: bool, any number of axes."""
    mask = np.asarray(mask, dtype=bool)
    out = mask.copy()
    for axis, (lo, hi) in enumerate(_face_shifts(mask.ndim)):
        out[hi] &= mask[lo]
        out[lo] &= mask[hi]
        for end in (0, -1):  # the array's faces: their outer neighbour is outside
            out[(slice(None),) * axis + (end,)] = False
    return out


def _face_shifts(ndim: int) -> list[tuple[tuple[slice, ...], tuple[slice, ...]]]:
    """Per axis, the index pair ``(all but the last, all but the first)`` along it: voxel
    ``lo[x]`` and ``hi[x]`` are face neighbours."""
    out = []
    for axis in range(ndim):
        before = (slice(None),) * axis
        out.append((before + (slice(None, -1),), before + (slice(1, None),)))
    return out


def _check_block(image: np.ndarray, slices: tuple[slice, ...], block: np.ndarray) -> None:
    shape = tuple(len(range(*s.indices(n))) for s, n in zip(slices, image.shape, strict=True))
    if block.shape != shape:
        raise ValueError(f"block has shape {block.shape}, slices select {shape}")


def edge_strength(
    image: np.ndarray,
    slices: tuple[slice, ...],
    block: np.ndarray,
    window: int = EDGE_WINDOW,
    spacing: Sequence[float] | None = None,
) -> float:
    """How strong an intensity edge a mask's boundary follows, locally.

    For each boundary voxel of the mask (a mask voxel with a face neighbour outside it), the
    ``window``-cube around it is split into its voxels inside and outside the mask, and the
    two means are compared; the result is the median over the boundary voxels whose window
    is mixed (between ``EDGE_MIXED`` and ``1 - EDGE_MIXED`` inside) of ``|mean inside - mean
    outside|``. Unlike :func:`border_contrast` it is local: a mask whose border runs along an
    edge scores high even where the tissue on either side varies across the image. Along a
    coarser axis the window spans fewer voxels (:func:`axis_steps`, at least 3). Windows
    are clipped to the image by repeating its border voxels. At most ``EDGE_SAMPLES``
    boundary voxels are read (a regular subsample of them in index order).

    Args:
        image: ``(I, J, K)`` native intensities (any real dtype).
        slices: Where ``block`` lies in ``image`` (native index slices).
        block: Bool mask of the shape those slices select.
        window: Odd window side in voxels of the finest axis (>= 3).
        spacing: ``(si, sj, sk)`` of ``image`` in mm; None: isotropic.

    Returns:
        The edge strength in the image's intensity units (>= 0); 0 for a mask of fewer than
        ``MIN_CONTRAST_VOXELS`` voxels or without a mixed window.

    Raises:
        ValueError: ``block`` does not have the shape ``slices`` select, ``window`` is
            even or below 3, or a bad ``spacing``.
    """
    if window < 3 or window % 2 == 0:
        raise ValueError(f"window must be an odd number of voxels >= 3, got {window}")
    _check_block(image, slices, block)
    if np.count_nonzero(block) < MIN_CONTRAST_VOXELS:
        return 0.0
    r = axis_steps(window // 2, spacing, at_least=1)
    native, mask, clipped = _grown_box(image.shape, slices, block, r)
    # boundary: mask voxels with a face neighbour outside (beyond the image: outside; but
    # windows repeat the image's and the mask's face voxels, so a window on a face that cuts
    # through the mask is not mixed there and does not count)
    boundary = np.flatnonzero(mask & ~face_erosion(mask))
    if boundary.size > EDGE_SAMPLES:
        boundary = boundary[:: -(-boundary.size // EDGE_SAMPLES)]
    # where the image's border clipped the margin, repeat its voxels: every window then
    # lies in the arrays
    values = np.asarray(image[native], dtype=np.float32)
    values = np.pad(values, clipped, mode="edge")
    padded = np.pad(mask, clipped, mode="edge")
    shift = np.asarray([c[0] for c in clipped])
    centres = np.stack(np.unravel_index(boundary, mask.shape), axis=1) + shift
    steps = [np.arange(-n, n + 1) for n in r]
    offsets = np.stack(np.meshgrid(*steps, indexing="ij"), axis=-1).reshape(-1, 3)
    # flat indices of every window voxel: centre's plus offset's (no window leaves the arrays)
    strides = np.asarray([padded.shape[1] * padded.shape[2], padded.shape[2], 1])
    flat = (centres @ strides)[:, None] + (offsets @ strides)[None, :]
    inside = padded.ravel()[flat]
    vals = values.ravel()[flat]
    n_in = inside.sum(axis=1)
    size = offsets.shape[0]
    mixed = (n_in > EDGE_MIXED * size) & (n_in < (1 - EDGE_MIXED) * size)
    if not mixed.any():
        return 0.0
    inside, vals, n_in = inside[mixed], vals[mixed].astype(np.float64), n_in[mixed]
    total = vals.sum(axis=1)
    in_sum = np.where(inside, vals, 0.0).sum(axis=1)
    gap = np.abs(in_sum / n_in - (total - in_sum) / (size - n_in))
    return float(np.median(gap))


def edge_score(contrast: float, strength: float) -> float:
    """The edge pick's score of a mask: ``sqrt(border_contrast) * edge_strength``.

    The exponent was chosen with the pick on the tuning sets (docs/default_model.md); only
    the ranking of one image's masks matters, so the intensity unit of ``strength`` does not.
    0 when either is 0 (or not a number).
    """
    if not (contrast > 0 and strength > 0):  # also NaN; an infinite contrast (two constant
        return 0.0  # regions) counts when the border has a gap
    return float(np.sqrt(contrast) * strength)


def mask_edge_score(
    image: np.ndarray,
    slices: tuple[slice, ...],
    block: np.ndarray,
    spacing: Sequence[float] | None = None,
) -> float:
    """:func:`edge_score` of a native mask: from its :func:`border_contrast` and
    :func:`edge_strength` (``spacing``: the image's, in mm; None: isotropic); 0 for an empty
    mask.

    Raises:
        ValueError: ``block`` does not have the shape ``slices`` select, or a bad ``spacing``.
    """
    _check_block(image, slices, block)
    if not block.any():
        return 0.0
    return edge_score(
        border_contrast(image, slices, block, spacing=spacing),
        edge_strength(image, slices, block, spacing=spacing),
    )


def later_click_refused(before: float, after: float, positive: bool) -> bool:
    """Whether the edge check refuses a later click: the edge score of the mask it gave,
    ``after``, is below ``LATER_POSITIVE_KEEP`` (positive click) or ``LATER_NEGATIVE_KEEP``
    (negative click) times ``before``, the score of the mask before the click
    (:func:`mask_edge_score`). A mask without a score before (0, NaN) never refuses a click.

    Raises:
        ValueError: a score is negative.
    """
    if before < 0 or after < 0:
        raise ValueError(f"edge scores are >= 0, got {before} before and {after} after")
    if not before > 0:
        return False
    keep = LATER_POSITIVE_KEEP if positive else LATER_NEGATIVE_KEEP
    return bool(after < keep * before)


def click_inside_z(
    image: np.ndarray,
    slices: tuple[slice, ...],
    block: np.ndarray,
    click: Sequence[int],
    near: int = CLICK_NEAR_VOXELS,
    spacing: Sequence[float] | None = None,
) -> float:
    """How unlike the inside of a mask the clicked voxels are, in robust standard deviations.

    The click's block (``CLICK_BLOCK_VOXELS`` each side: 3x3x3 on an isotropic image, fewer
    voxels along a coarser axis, :func:`axis_steps`; clipped to the image) gives two values,
    its mean and its median (a click on a structure's edge, whose block holds some of the
    neighbour: the median stays on the side most of the block is on). Each is compared with
    the median of the inside's intensities, ``|value - median| / sd``, the standard deviation
    estimated robustly as the interquartile range / ``IQR_PER_SD``, and the nearer of the
    two counts. That for the whole inside and for the inside voxels within ``near`` voxels
    of the click (a cube; skipped when none is there); the larger of the two. At most
    ``INSIDE_SAMPLES`` voxels of the whole inside are read (a regular subsample).

    Args:
        image: ``(I, J, K)`` native intensities.
        slices: Where ``block`` lies in ``image``.
        block: Bool mask of the shape those slices select.
        click: Native voxel ``(i, j, k)`` of the click.
        near: Half-side in voxels of the finest axis of the cube around the click for the
            local comparison (fewer along a coarser axis; 0: whole inside only).
        spacing: ``(si, sj, sk)`` of ``image`` in mm; None: isotropic.

    Returns:
        The distance (>= 0); 0 for an empty mask; for a mask of constant inside (spread 0),
        0 when the click's neighbourhood has exactly that intensity, else infinity.

    Raises:
        ValueError: ``block`` does not have the shape ``slices`` select, ``click`` lies
            outside the image, ``near`` < 0, or a bad ``spacing``.
    """
    if near < 0:
        raise ValueError(f"near must be >= 0 voxels, got {near}")
    _check_block(image, slices, block)
    if len(click) != 3 or not all(0 <= int(c) < n for c, n in zip(click, image.shape, strict=True)):
        raise ValueError(f"click {tuple(click)} lies outside the image of shape {image.shape}")
    at = tuple(int(c) for c in click)
    half = axis_steps(CLICK_BLOCK_VOXELS, spacing)
    around = tuple(slice(max(c - h, 0), c + h + 1) for c, h in zip(at, half, strict=True))
    # the block's mean (robust to noise) and its median (a click on a structure's edge,
    # whose block is part the neighbour's: the median stays with the side most of it is on)
    values = np.asarray(image[around], dtype=np.float64)
    at_click = (float(values.mean()), float(np.median(values)))

    def distance(inside: np.ndarray) -> float:
        q25, median, q75 = np.percentile(inside, [25, 50, 75])
        spread = (q75 - q25) / IQR_PER_SD  # robust: a few voxels of the ring do not widen it
        gap = min(abs(v - median) for v in at_click)
        if spread == 0:
            return 0.0 if gap == 0 else float("inf")
        return float(gap / spread)

    inside = np.asarray(image[slices], dtype=np.float64)[block]
    if inside.size == 0:
        return 0.0
    if inside.size > INSIDE_SAMPLES:
        inside = inside[:: -(-inside.size // INSIDE_SAMPLES)]
    z = distance(inside)
    if not near:
        return z
    # the inside within ``near`` voxels of the click: the block's part of that cube
    offset = [s.indices(n)[0] for s, n in zip(slices, image.shape, strict=True)]
    reach = axis_steps(near, spacing)
    lo = [max(c - r - o, 0) for c, r, o in zip(at, reach, offset, strict=True)]
    hi = [min(c + r + 1 - o, n) for c, r, o, n in zip(at, reach, offset, block.shape, strict=True)]
    if any(h <= low for low, h in zip(lo, hi, strict=True)):
        return z
    cube = tuple(slice(low, h) for low, h in zip(lo, hi, strict=True))
    native = tuple(slice(low + o, h + o) for low, h, o in zip(lo, hi, offset, strict=True))
    local = np.asarray(image[native], dtype=np.float64)[block[cube]]
    return z if local.size == 0 else max(z, distance(local))


def click_like_inside(
    image: np.ndarray,
    slices: tuple[slice, ...],
    block: np.ndarray,
    click: Sequence[int],
    sds: float = CLICK_LIKE_SDS,
    near: int = CLICK_NEAR_VOXELS,
    spacing: Sequence[float] | None = None,
) -> bool:
    """Whether the clicked voxels look like the inside of a mask: :func:`click_inside_z` is
    at most ``sds``, for the whole inside and for the inside voxels within ``near`` voxels of
    the click. A click in a lesion is unlike an organ mask that holds the lesion, though the
    organ's border may be the sharper edge, and unlike the tissue right around it in a
    brain-sized mask.

    Returns:
        The answer; True for an empty mask; for a mask of constant inside (spread 0), True
        only when the click's neighbourhood has exactly that intensity.

    Raises:
        ValueError: as :func:`click_inside_z`, or ``sds`` <= 0.
    """
    if not sds > 0:
        raise ValueError(f"sds must be > 0, got {sds}")
    return click_inside_z(image, slices, block, click, near, spacing) <= sds


def edge_pick(
    contrasts: Sequence[float],
    strengths: Sequence[float],
    like_click: Sequence[bool] | None = None,
) -> int:
    """Index of the extent with the highest :func:`edge_score` (the first of equals).

    Args:
        contrasts: :func:`border_contrast` of each extent (the model's pick first).
        strengths: :func:`edge_strength` of each.
        like_click: :func:`click_like_inside` of each: extents whose inside is unlike the
            clicked voxels are passed over, unless all are. None: all count.

    Raises:
        ValueError: empty or unequal sequences.
    """
    n = len(contrasts)
    if not n or len(strengths) != n or (like_click is not None and len(like_click) != n):
        raise ValueError(
            f"need one strength (and one click test) per contrast, got {n} contrasts, "
            f"{len(strengths)} strengths"
            + ("" if like_click is None else f", {len(like_click)} click tests")
        )
    scores = [edge_score(c, s) for c, s in zip(contrasts, strengths, strict=True)]
    allowed = [k for k in range(n) if like_click is None or like_click[k]] or list(range(n))
    return max(allowed, key=lambda k: (scores[k], -k))
