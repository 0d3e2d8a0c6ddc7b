"""Boundary refinement: the model's mask, with its boundary band decided again by intensity.

Our models predict on a coarse grid (64³ logits for a 128³ ROI: 3 mm cells at 1.5 mm), so
their masks are blocky and miss thin parts (gyral white matter, the edge of a lesion). This
step keeps the model's mask as it is away from its boundary and decides the voxels within
``band`` voxels of the boundary again, from two intensity histograms estimated on the mask
itself: one from its interior (deeper than ``band``), one from a ring just outside it
(``band`` to ``ring * band`` voxels away). A band voxel goes inside when

    log p_in(I) - log p_out(I) + shape_weight * d / band > 0,

with ``d`` its signed chessboard distance to the boundary (positive inside): the likelihood
ratio of a two-class intensity model (as in GrabCut, Rother et al. 2004, with histograms
instead of Gaussian mixtures and the model's mask instead of a box), and a prior that keeps
the boundary where the model put it when intensity does not tell. It is repeated
``iterations`` times with histograms and distances of the refined mask, always inside the
band around the model's own boundary (``anchored``: the result never leaves it), then the
components holding a positive click are kept (without clicks: those meeting the model's
mask).

Clicks are respected: a positive click's voxel is always inside, and within ``band`` voxels
of a negative click the model's mask is kept. Voxels without image data (``valid`` False:
outside the image or outside every tile) never enter the histograms.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import cc3d
import numpy as np
from scipy import ndimage

#: Histogram bins of the two intensity models (over the 0.5-99.5 % range of the samples).
BINS = 48
#: Fewest voxels an interior or ring sample needs for a histogram; below, no refinement.
MIN_SAMPLE = 20


def refine_boundary(
    image: np.ndarray,
    mask: np.ndarray,
    band: int,
    *,
    positive: np.ndarray | Sequence[Sequence[int]] = (),
    negative: np.ndarray | Sequence[Sequence[int]] = (),
    valid: np.ndarray | None = None,
    iterations: int = 2,
    shape_weight: float = 0.5,
    ring: int = 3,
    anchored: bool = True,
) -> np.ndarray:
    """Decide the voxels near a mask's boundary again by intensity.

    Args:
        image: ``(X, Y, Z)`` intensities on an isotropic grid (a ROI or a union of ROIs).
        mask: ``(X, Y, Z)`` bool mask on the same grid.
        band: Half-width in voxels of the band decided again (>= 1).
        positive: ``(N, 3)`` voxel indices of positive clicks on this grid (those outside it
            are ignored).
        negative: ``(M, 3)`` voxel indices of negative clicks.
        valid: ``(X, Y, Z)`` bool, the voxels with image data (default: all).
        iterations: How often the band is decided (each time with the histograms and the
            distances of the mask refined so far).
        shape_weight: Weight of the signed-distance prior against the likelihood ratio.
        ring: The outside sample spans ``band`` to ``ring * band`` voxels from the mask.
        anchored: Decide only voxels within ``band`` of the input mask's boundary in every
            iteration, so the result stays within ``band`` of the model's mask (the default:
            on the MNI152 tuning sets it kept the gains of later clicks that a free band,
            which follows the boundary as it moves, lost); False: the free band.

    Returns:
        A new ``(X, Y, Z)`` bool mask; the input is returned unchanged when it is empty or
        full, or when the interior or ring sample is too small for a histogram.

    Raises:
        ValueError: shapes differ; ``band``, ``iterations`` or ``ring`` not whole numbers, or
            ``band`` < 1, ``iterations`` < 1, ``ring`` < 2.
    """
    mask = np.asarray(mask, dtype=bool)
    if image.shape != mask.shape or (valid is not None and valid.shape != mask.shape):
        raise ValueError(
            f"image {image.shape}, mask {mask.shape} and valid "
            f"{None if valid is None else valid.shape} must have one shape"
        )
    for name, value in (("band", band), ("iterations", iterations), ("ring", ring)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"{name} must be a whole number of voxels, got {value!r}")
    if band < 1 or iterations < 1 or ring < 2:
        raise ValueError(
            f"need band >= 1, iterations >= 1 and ring >= 2, got {band}, {iterations}, {ring}"
        )
    if not mask.any() or mask.all():
        return mask
    pos = _inside(positive, mask.shape)
    neg = _inside(negative, mask.shape)
    # everything that can change or be sampled lies within this box
    reach = ring * band + band * iterations + 1
    box = _box(mask, reach)
    img = np.ascontiguousarray(image[box], dtype=np.float32)
    ok = np.ones(img.shape, dtype=bool) if valid is None else np.asarray(valid[box], dtype=bool)
    start = np.array([s.start for s in box])
    pos_b, neg_b = _inside(pos - start, img.shape), _inside(neg - start, img.shape)
    cur = np.ascontiguousarray(mask[box])
    model = cur
    layers: _Layers | None = _Layers.of(model, band, ring * band)
    limit = layers.band() if anchored else None
    for _ in range(iterations):
        if layers is None:
            layers = _Layers.of(cur, band, ring * band)
        new = _decide_band(img, cur, layers, ok, band, shape_weight, ring, limit)
        layers = None
        if new is None:
            break
        for v in neg_b:  # the model's answer near a negative click
            near = tuple(slice(max(int(c) - band, 0), int(c) + band + 1) for c in v)
            new[near] = model[near]
        for v in pos_b:
            new[tuple(v)] = True
        cur = _keep_clicked(new, pos_b, model)
    out = mask.copy()
    out[box] = cur
    return out


class _Layers(NamedTuple):
    """A mask's signed chessboard distance ``sd`` to its boundary (> 0 inside, 1 on the inner
    layer, -1 on the outer one) as far as one band decision reads it: the sets ``sd >= -k``
    and ``sd <= k`` for ``k`` up to the band's half-width, and ``sd >= -far``, grown a voxel
    at a time (two distance transforms of the whole array cost several times more).

    Distances count voxels of the array only, as ``scipy.ndimage.distance_transform_cdt``
    does: nothing lies beyond the array's faces. A mask that is empty or fills the array has
    no boundary; :func:`_decide_band` then finds no interior or no ring to sample.
    """

    #: ``at_least[k]``: ``(X, Y, Z)`` bool, ``sd >= -k``: the mask grown by ``k`` chessboard
    #: steps (``k = 0 .. width``).
    at_least: list[np.ndarray]
    #: ``at_most[k]``: ``(X, Y, Z)`` bool, ``sd <= k``: the mask's outside grown by ``k``
    #: steps (``k = 0 .. width``).
    at_most: list[np.ndarray]
    #: ``(X, Y, Z)`` bool, ``sd >= -far``: the mask grown by ``far`` steps.
    near: np.ndarray

    @classmethod
    def of(cls, mask: np.ndarray, width: int, far: int) -> _Layers:
        """The layers of an ``(X, Y, Z)`` bool ``mask`` (fastest C-contiguous) for a band
        ``width`` voxels wide on each side and a ring out to ``far`` (>= ``width``) voxels."""
        at_least, at_most = [mask], [~mask]
        for _ in range(width):
            at_least.append(_grow(at_least[-1]))
            at_most.append(_grow(at_most[-1]))
        near = at_least[-1]
        for _ in range(far - width):
            near = _grow(near)
        return cls(at_least, at_most, near)

    def band(self) -> np.ndarray:
        """``(X, Y, Z)`` bool, ``|sd| <= width``."""
        return self.at_least[-1] & self.at_most[-1]

    def signed(self, at: np.ndarray) -> np.ndarray:
        """float32 ``sd`` of the voxels at flat (C-order) indices ``at``, all in
        :meth:`band`."""
        sd = np.zeros(at.size, dtype=np.int32)
        # j deep: in every at_least[k], in at_most[k] for k >= j (j away: the reverse)
        for inside, outside in zip(self.at_least[:-1], self.at_most[:-1], strict=True):
            sd += inside.take(at)
            sd -= outside.take(at)
        return sd.astype(np.float32)


def _grow(mask: np.ndarray) -> np.ndarray:
    """An ``(X, Y, Z)`` bool ``mask`` grown by one chessboard step: a voxel joins when one of
    its 26 neighbours in the array is in (fastest on a C-contiguous ``mask``)."""
    out = mask
    for axis in range(3):
        if mask.shape[axis] == 1:
            continue
        src, out = out, out.copy()
        if axis < 2:
            lo = (slice(None),) * axis + (slice(1, None),)
            hi = (slice(None),) * axis + (slice(-1),)
            out[lo] |= src[hi]
            out[hi] |= src[lo]
        else:  # shifting the flat arrays is faster; redo the rows' ends, where it wraps
            flat_out, flat_src = out.reshape(-1), src.reshape(-1)
            flat_out[1:] |= flat_src[:-1]
            flat_out[:-1] |= flat_src[1:]
            out[..., 0] = src[..., 0] | src[..., 1]
            out[..., -1] = src[..., -1] | src[..., -2]
    return out


def _decide_band(
    img: np.ndarray,
    cur: np.ndarray,
    layers: _Layers,
    ok: np.ndarray,
    band: int,
    weight: float,
    ring: int,
    limit: np.ndarray | None = None,
) -> np.ndarray | None:
    """One decision of the band of ``cur`` (``layers``: its signed distance; ``limit``: the
    voxels that may change, None: all); None when there is too little to sample."""
    core = ~layers.at_most[band] & ok
    if np.count_nonzero(core) < MIN_SAMPLE:
        core = cur & ok  # a thin mask: its interior is all of it
    outer = layers.near & ~layers.at_least[band] & ok
    if np.count_nonzero(core) < MIN_SAMPLE or np.count_nonzero(outer) < MIN_SAMPLE:
        return None
    # a regular subsample of at most ~2e5 voxels per class is plenty for 48 bins
    inner_vals, outer_vals = img[core], img[outer]
    inner_vals = inner_vals[:: max(1, inner_vals.size // 200_000)]
    outer_vals = outer_vals[:: max(1, outer_vals.size // 200_000)]
    both = np.concatenate([inner_vals[:: max(1, inner_vals.size // 20000)],
                           outer_vals[:: max(1, outer_vals.size // 20000)]])  # fmt: skip
    lo, hi = np.percentile(both, [0.5, 99.5])
    if not hi > lo:
        return None
    scale = BINS / (hi - lo)
    h_in = _histogram(inner_vals, lo, scale)
    h_out = _histogram(outer_vals, lo, scale)
    llr = np.log(h_in) - np.log(h_out)
    in_band = layers.band() & ok
    if limit is not None:
        in_band &= limit
    at = np.flatnonzero(in_band)
    vals = img.take(at)
    idx = np.clip(((vals - lo) * scale).astype(np.int64), 0, BINS - 1)
    new = cur.copy()
    np.put(new, at, llr[idx] + weight * layers.signed(at) / band > 0)
    return new


def _histogram(values: np.ndarray, lo: float, scale: float) -> np.ndarray:
    """Smoothed, normalised histogram with a floor (no empty bin has probability 0)."""
    idx = np.clip(((values - lo) * scale).astype(np.int64), 0, BINS - 1)
    h = np.bincount(idx, minlength=BINS).astype(np.float64)
    h = ndimage.gaussian_filter1d(h, 1.0) + 1e-3 * h.sum() / BINS + 1e-9
    return h / h.sum()


def _keep_clicked(new: np.ndarray, pos: np.ndarray, model: np.ndarray) -> np.ndarray:
    """The components of ``new`` holding a positive click (without clicks: those meeting the
    model's mask)."""
    labels = cc3d.connected_components(new, connectivity=6)
    if len(pos):
        keep = np.unique(labels[tuple(pos.T)])
    else:
        keep = np.unique(labels[model])
    keep = keep[keep > 0]
    if keep.size == 0:
        return model
    return labels == keep[0] if keep.size == 1 else np.isin(labels, keep)


def _inside(points: np.ndarray | Sequence[Sequence[int]], shape: Sequence[int]) -> np.ndarray:
    pts = np.asarray(points, dtype=np.int64).reshape(-1, 3)
    return pts[np.all((pts >= 0) & (pts < np.asarray(shape)), axis=1)]


def _box(mask: np.ndarray, margin: int) -> tuple[slice, slice, slice]:
    """The bounding box of a non-empty ``(X, Y, Z)`` bool ``mask``, ``margin`` voxels wider on
    every side (within the array)."""
    plane = mask.any(axis=0)  # cheaper than reducing the whole mask over the outer axes
    profiles = (mask.any(axis=(1, 2)), plane.any(axis=1), plane.any(axis=0))
    out = []
    for axis, profile in enumerate(profiles):
        hit = np.flatnonzero(profile)
        lo, hi = int(hit[0]) - margin, int(hit[-1]) + margin + 1
        out.append(slice(max(lo, 0), min(hi, mask.shape[axis])))
    return (out[0], out[1], out[2])
