"""Features of a first click's extents, for a learned ranking of them (a probe, not bundled).

A first click is ambiguous, and the model decodes several masks for it
(:meth:`SamMed3DPredictor.first_click_extents`). The edge pick
(:mod:`sammed3d.inference.contrast`) ranks them by one score, the strength of the intensity
edge the mask's border follows. This probe asks whether a weighted sum of more of what the
image says of each mask ranks them better: :data:`FEATURES` describe one mask in its group
(the masks of one click): its edge score relative to the group's best, border contrast,
local edge strength, how like its inside the clicked voxels are, its size, the model's own
score, the lattice it was decoded on, how deep inside it the click lies and how much of the
image it fills. ``tools/collect_pick_features.py`` writes them with each mask's Dice,
``tools/fit_first_pick.py`` fits the weights (a conditional logit, McFadden 1974) and
cross-validates them against the edge pick. Measured on 2026-12-02: no better than the
edge pick (docs/default_model.md), so not in the package.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from sammed3d.inference.contrast import (
    border_contrast,
    click_inside_z,
    edge_score,
    edge_strength,
)

#: The features of a mask, in the order of the weights.
FEATURES = (
    "edge",  # log(edge score / the group's best edge score), clipped at -EDGE_FLOOR
    "contrast",  # sqrt of the border contrast, clipped at sqrt(CONTRAST_CAP)
    "strength",  # edge strength / the group's strongest
    "like_click",  # 1 when the clicked voxels look like the inside (click z <= 2.5)
    "click_z",  # how unlike the inside the clicked voxels are (robust SDs), clipped
    "log_volume",  # log10 of the volume in ml, clipped to [-3, 4]
    "size_rank",  # 0 for the group's smallest mask, 1 for its largest
    "model_score",  # the model's predicted IoU x stability (0 where unknown)
    "model_pick",  # 1 for the model's own pick
    "zoom",  # 1 for a mask of the zoom lattice
    "fine_zoom",  # 1 for a mask of the fine zoom lattice
    "depth",  # distance from the click to the mask's outside / the mask's radius, <= 1
    "image_share",  # the mask's share of the image's voxels
    "image_faces",  # how many of the image's six faces the mask touches, / 6
)
#: ``log(edge score ratio)`` below this is clipped (a mask without any edge scores it).
EDGE_FLOOR = 6.0
#: Border contrasts above this count as this (two constant regions give infinity).
CONTRAST_CAP = 9.0
#: Click distances (:func:`click_inside_z`) above this count as this.
CLICK_Z_CAP = 6.0
#: The clicked voxels look like a mask's inside at this many SDs or fewer (the edge pick's
#: ``CLICK_LIKE_SDS``).
LIKE_SDS = 2.5
#: The depth of a click is searched within this many voxels of it.
DEPTH_WINDOW = 24


def click_depth(
    slices: tuple[slice, ...],
    block: np.ndarray,
    click: Sequence[int],
    spacing: Sequence[float],
    window: int = DEPTH_WINDOW,
) -> float:
    """How deep inside a mask a click lies, relative to the mask's size.

    The Euclidean distance in mm from the click to the nearest voxel outside the mask (searched
    within ``window`` voxels of the click), divided by the radius of the ball of the mask's
    volume, at most 1.

    Args:
        slices: Where ``block`` lies in the image (native index slices with a start).
        block: Bool mask of the shape those slices select.
        click: Native voxel ``(i, j, k)``.
        spacing: Voxel size in mm per axis.
        window: Half-side of the search cube in voxels (>= 1).

    Returns:
        The depth in [0, 1]; 0 for a click outside the mask or an empty mask.

    Raises:
        ValueError: ``window`` < 1.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1 voxel, got {window}")
    count = int(np.count_nonzero(block))
    if not count:
        return 0.0
    start = np.asarray([s.start or 0 for s in slices])
    at = np.asarray(click, dtype=np.int64) - start
    if np.any(at < 0) or np.any(at >= block.shape) or not block[tuple(at)]:
        return 0.0
    lo = at - window
    hi = at + window + 1
    cut = tuple(slice(max(a, 0), min(b, n)) for a, b, n in zip(lo, hi, block.shape, strict=True))
    pad = [(max(-a, 0), max(b - n, 0)) for a, b, n in zip(lo, hi, block.shape, strict=True)]
    local = np.pad(block[cut], pad, constant_values=False)
    # outside the cube counts as inside (unknown): only voxels seen outside the mask count
    local = np.pad(local, 1, constant_values=True)
    dist = ndimage.distance_transform_edt(local, sampling=tuple(float(s) for s in spacing))
    depth = float(dist[(window + 1,) * 3])
    volume = count * float(np.prod(spacing))
    radius = (3.0 * volume / (4.0 * np.pi)) ** (1.0 / 3.0)
    return min(depth / radius, 1.0)


def extent_features(
    image: np.ndarray,
    masks: Sequence[tuple[tuple[slice, ...], np.ndarray]],
    click: Sequence[int],
    spacing: Sequence[float],
    scores: Sequence[float],
    levels: Sequence[int],
) -> np.ndarray:
    """The :data:`FEATURES` of each mask of one first click.

    Args:
        image: ``(I, J, K)`` native intensities.
        masks: Native ``(slices, block)`` of each mask, the model's own pick first.
        click: Native voxel ``(i, j, k)`` of the first click.
        spacing: Voxel size in mm per axis.
        scores: The model's score of each mask (NaN where unknown).
        levels: The lattice of each mask's ROI: 0 main, 1 zoom, 2 fine zoom.

    Returns:
        ``(len(masks), len(FEATURES))`` float64.

    Raises:
        ValueError: no masks, or ``scores`` / ``levels`` of another length.
    """
    n = len(masks)
    if not n or len(scores) != n or len(levels) != n:
        raise ValueError(
            f"need one score and one level per mask, got {n} masks, {len(scores)} scores, "
            f"{len(levels)} levels"
        )
    contrasts = np.asarray([border_contrast(image, *m) for m in masks])
    strengths = np.asarray([edge_strength(image, *m) for m in masks])
    edges = np.asarray([edge_score(c, s) for c, s in zip(contrasts, strengths, strict=True)])
    z = np.asarray([click_inside_z(image, *m, click) for m in masks])
    voxels = np.asarray([np.count_nonzero(m[1]) for m in masks], dtype=np.float64)
    out = np.zeros((n, len(FEATURES)))
    best = edges.max()
    with np.errstate(divide="ignore"):
        ratio = np.log(edges / best) if best > 0 else np.full(n, -np.inf)
    out[:, 0] = np.clip(np.nan_to_num(ratio, nan=-EDGE_FLOOR), -EDGE_FLOOR, 0.0)
    out[:, 1] = np.sqrt(np.clip(np.nan_to_num(contrasts, nan=0.0), 0.0, CONTRAST_CAP))
    out[:, 2] = strengths / strengths.max() if strengths.max() > 0 else 0.0
    out[:, 3] = z <= LIKE_SDS
    out[:, 4] = np.minimum(np.nan_to_num(z, nan=CLICK_Z_CAP), CLICK_Z_CAP)
    ml = voxels * float(np.prod(spacing)) / 1000.0
    out[:, 5] = np.clip(np.log10(np.maximum(ml, 1e-6)), -3.0, 4.0)
    out[:, 6] = np.argsort(np.argsort(voxels, kind="stable"), kind="stable") / max(n - 1, 1)
    out[:, 7] = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0)
    out[0, 8] = 1.0
    out[:, 9] = np.asarray(levels) == 1
    out[:, 10] = np.asarray(levels) == 2
    out[:, 11] = [click_depth(*m, click, spacing) for m in masks]
    out[:, 12] = voxels / float(np.prod(image.shape))
    out[:, 13] = [image_faces(image.shape, *m) / 6.0 for m in masks]
    return out


def image_faces(shape: Sequence[int], slices: tuple[slice, ...], block: np.ndarray) -> int:
    """How many of the six faces of an image of ``shape`` a native mask touches (0 to 6)."""
    touched = 0
    for axis, (s, n) in enumerate(zip(slices, shape, strict=True)):
        others = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(block.any(axis=others))
        if not hit.size:
            return 0
        start = s.indices(n)[0]
        touched += int(start + hit[0] == 0) + int(start + hit[-1] == n - 1)
    return touched


def learned_pick(features: np.ndarray, weights: Sequence[float]) -> int:
    """Index of the mask with the highest ``features @ weights`` (the first of equals).

    Args:
        features: ``(N, F)`` from :func:`extent_features`.
        weights: ``F`` weights (``tools/fit_first_pick.py``).

    Raises:
        ValueError: no masks, or weights that do not match the features.
    """
    f = np.asarray(features, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if f.ndim != 2 or not len(f) or f.shape[1] != w.shape[0]:
        raise ValueError(
            f"need (N >= 1, {len(w)}) features for {len(w)} weights, got shape {f.shape}"
        )
    score = f @ w
    return int(np.argmax(score))
