"""Segmentation metrics on binary masks with physical spacing.

All functions take two bool-like 3-D arrays of the same shape, ``pred`` and ``gt``, in any
axis order, plus the voxel ``spacing`` (mm) in that same axis order.

* :func:`dice` and :func:`iou`: overlap.
* :func:`nsd`: normalised surface Dice at a tolerance in mm (Nikolov et al. 2021), the metric
  of the published ``compute_metrics`` (DeepMind ``surface-distance`` at 1 mm).
* :func:`hd95`: the 95th-percentile symmetric Hausdorff distance in mm.

Surfaces follow DeepMind's ``surface-distance`` (and MONAI's ``use_subvoxels=True``): surface
elements live on the grid of voxel corners, each with the marching-cubes area of its 2x2x2
neighbourhood (MONAI's table for the given spacing). NSD is the area of both surfaces lying
within the tolerance of the other surface, over the total area; HD95 is the maximum of the two
directed area-weighted 95th percentiles. Distances use the anisotropic spacing exactly.

Empty-mask policy (docs/faithfulness.md §7.2, matching the published scripts):

=====================  ========  ========  ========  ========
case                   dice      iou       nsd       hd95
=====================  ========  ========  ========  ========
gt empty, pred empty   NaN       NaN       NaN       NaN
gt empty, pred not     0         0         0         inf
gt not, pred empty     0         0         0         inf
=====================  ========  ========  ========  ========

NaN means "undefined": :class:`MetricAccumulator` excludes NaN from means and reports how
many values were NaN; infinite HD95 values are likewise excluded from the HD95 mean and counted
(``n_inf``). JSON output writes both as ``null``.

**A missed structure must not improve a mean.** The reports (``sammed3d metrics``,
:func:`label_map_metrics`, the evaluation harness) therefore do not use ``inf``: where exactly
one mask is empty, HD95 is the **image diagonal in mm** (:func:`worst_case_distance_mm`, the
largest distance two voxels of the image can have; the BraTS convention), passed as
``hd95_missing`` to :func:`compute_metrics`. The functions above keep the mathematical ``inf``.

Label maps given to :func:`label_map_metrics` must hold non-negative integers
(:func:`check_label_map`): an intensity image passed by mistake is refused, not scored.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import torch

from sammed3d.io import Volume, VolumeError

logger = logging.getLogger(__name__)

#: Metric names in the order reports list them.
METRIC_NAMES: tuple[str, ...] = ("dice", "iou", "nsd", "hd95")


def _as_bool(x: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """Bool NumPy view of a mask (non-zero = foreground)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    return arr if arr.dtype == bool else arr != 0


def _check(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt must have the same shape, got {pred.shape} and {gt.shape}")


def _check_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    sp = tuple(float(s) for s in spacing)
    if len(sp) != ndim or not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing must be {ndim} positive numbers, got {list(spacing)}")
    return sp


def dice(pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor) -> float:
    """Dice similarity coefficient ``2|P ∩ G| / (|P| + |G|)``.

    Args:
        pred: Predicted mask, any shape (non-zero = foreground).
        gt: Ground-truth mask, same shape.

    Returns:
        Dice in [0, 1]; NaN if both masks are empty.
    """
    p, g = _as_bool(pred, "pred"), _as_bool(gt, "gt")
    _check(p, g)
    denom = int(np.count_nonzero(p)) + int(np.count_nonzero(g))
    if denom == 0:
        return math.nan
    return 2.0 * int(np.count_nonzero(p & g)) / denom


def iou(pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor) -> float:
    """Intersection over union (Jaccard) ``|P ∩ G| / |P ∪ G|``; NaN if both masks are empty."""
    p, g = _as_bool(pred, "pred"), _as_bool(gt, "gt")
    _check(p, g)
    union = int(np.count_nonzero(p | g))
    if union == 0:
        return math.nan
    return int(np.count_nonzero(p & g)) / union


@dataclass(frozen=True)
class SurfaceDistances:
    """Distances between the surfaces of two masks, with the area of each surface element.

    Attributes:
        pred_to_gt: ``(Np,)`` distance (mm) of each pred surface element to the gt surface.
        gt_to_pred: ``(Ng,)`` distance (mm) of each gt surface element to the pred surface.
        pred_areas: ``(Np,)`` area (mm²) of each pred surface element.
        gt_areas: ``(Ng,)`` area (mm²) of each gt surface element.
    """

    pred_to_gt: np.ndarray
    gt_to_pred: np.ndarray
    pred_areas: np.ndarray
    gt_areas: np.ndarray


@lru_cache(maxsize=32)
def _area_table(spacing: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """MONAI's (= DeepMind's) neighbour-code -> surface-area table and its 2x2x2 kernel."""
    from monai.metrics.utils import get_code_to_measure_table

    table, kernel = get_code_to_measure_table(spacing)
    return (
        np.asarray(table, dtype=np.float64),
        np.asarray(kernel, dtype=np.int64).reshape(2, 2, 2),
    )


def _surface(
    mask: np.ndarray, table: np.ndarray, kernel: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Corner-grid surface elements of a (padded) mask: integer coordinates and areas."""
    code = np.zeros(tuple(s - 1 for s in mask.shape), dtype=np.uint8)  # codes are 0..255
    n0, n1, n2 = code.shape
    bits = mask.view(np.uint8)
    for a in range(2):
        for b in range(2):
            for c in range(2):
                code += bits[a : a + n0, b : b + n1, c : c + n2] * np.uint8(kernel[a, b, c])
    edges = (code != 0) & (code != 255)
    return np.argwhere(edges), table[code[edges]]


def surface_distances(
    pred: np.ndarray | torch.Tensor,
    gt: np.ndarray | torch.Tensor,
    spacing: Sequence[float] | None = None,
    *,
    method: Literal["auto", "kdtree", "edt"] = "auto",
) -> SurfaceDistances:
    """Surface elements of both masks and their distances to the other surface.

    Computed inside the bounding box of ``pred | gt`` (padded by one voxel), so the cost
    scales with the objects, not with the volume.

    Args:
        pred: ``(I, J, K)`` predicted mask.
        gt: ``(I, J, K)`` ground-truth mask.
        spacing: Voxel size (mm) along the same three axes; None for 1 mm.
        method: Nearest-surface search: a KD-tree over the surface elements, a distance
            transform over the box (faster for very large, noisy surfaces), or ``"auto"``.
            Both give the same distances.

    Returns:
        The distances and areas; arrays are empty for an empty mask (distances to an empty
        surface are ``inf``).
    """
    from scipy.spatial import cKDTree

    p, g = _as_bool(pred, "pred"), _as_bool(gt, "gt")
    _check(p, g)
    if p.ndim != 3:
        raise ValueError(f"surface metrics need 3-D masks, got shape {p.shape}")
    sp = _check_spacing(spacing, 3)
    union = p | g
    if not union.any():
        empty = np.zeros(0, dtype=np.float64)
        return SurfaceDistances(empty, empty, empty, empty)
    box = tuple(
        slice(int(idx[0]), int(idx[-1]) + 1)
        for idx in (
            np.flatnonzero(union.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)
        )
    )
    table, kernel = _area_table((sp[0], sp[1], sp[2]))
    scale = np.asarray(sp, dtype=np.float64)
    pts_p, areas_p = _surface(np.pad(p[box], 1), table, kernel)
    pts_g, areas_g = _surface(np.pad(g[box], 1), table, kernel)

    grid_shape = tuple(b.stop - b.start + 1 for b in box)  # the corner grid of the box
    # KD-tree queries cost ~ per surface element, a distance transform ~ per box voxel:
    # noisy predictions have huge surfaces, where the transform is much faster (same values)
    if method not in ("auto", "kdtree", "edt"):
        raise ValueError(f"method must be 'auto', 'kdtree' or 'edt', got {method!r}")
    use_edt = method == "edt" or (
        method == "auto" and (len(pts_p) + len(pts_g)) * 8 > int(np.prod(grid_shape))
    )

    def directed(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        if len(src) == 0:
            return np.zeros(0, dtype=np.float64)
        if len(dst) == 0:
            return np.full(len(src), np.inf)
        if use_edt:
            from scipy.ndimage import distance_transform_edt

            free = np.ones(grid_shape, dtype=bool)
            free[tuple(dst.T)] = False
            return distance_transform_edt(free, sampling=sp)[tuple(src.T)]
        return cKDTree(dst * scale, leafsize=32).query(src * scale, k=1)[0]

    return SurfaceDistances(
        pred_to_gt=directed(pts_p, pts_g),
        gt_to_pred=directed(pts_g, pts_p),
        pred_areas=areas_p,
        gt_areas=areas_g,
    )


def nsd_from_distances(sd: SurfaceDistances, tolerance_mm: float = 1.0) -> float:
    """Normalised surface Dice from precomputed distances (empty policy as :func:`nsd`)."""
    if not (math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise ValueError(f"tolerance_mm must be a finite number >= 0, got {tolerance_mm}")
    total = float(sd.pred_areas.sum() + sd.gt_areas.sum())
    if total == 0.0:
        return math.nan
    if sd.pred_areas.size == 0 or sd.gt_areas.size == 0:
        return 0.0
    ok = sd.pred_areas[sd.pred_to_gt <= tolerance_mm].sum()
    ok += sd.gt_areas[sd.gt_to_pred <= tolerance_mm].sum()
    return float(ok / total)


def _weighted_percentile(dist: np.ndarray, areas: np.ndarray, percent: float) -> float:
    """Smallest distance whose cumulative area fraction reaches ``percent`` (DeepMind's rule)."""
    order = np.argsort(dist, kind="stable")
    d, a = dist[order], areas[order]
    cum = np.cumsum(a) / a.sum()
    idx = int(np.searchsorted(cum, percent / 100.0))
    return float(d[min(idx, len(d) - 1)])


def hd_from_distances(sd: SurfaceDistances, percentile: float = 95.0) -> float:
    """Symmetric area-weighted percentile Hausdorff distance (policy as :func:`hd95`)."""
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    if sd.pred_areas.size == 0 and sd.gt_areas.size == 0:
        return math.nan
    if sd.pred_areas.size == 0 or sd.gt_areas.size == 0:
        return math.inf
    return max(
        _weighted_percentile(sd.pred_to_gt, sd.pred_areas, percentile),
        _weighted_percentile(sd.gt_to_pred, sd.gt_areas, percentile),
    )


def nsd(
    pred: np.ndarray | torch.Tensor,
    gt: np.ndarray | torch.Tensor,
    spacing: Sequence[float] | None = None,
    tolerance_mm: float = 1.0,
) -> float:
    """Normalised surface Dice (surface Dice at tolerance).

    Args:
        pred: ``(I, J, K)`` predicted mask.
        gt: ``(I, J, K)`` ground-truth mask.
        spacing: Voxel size (mm) along the same axes; None for 1 mm.
        tolerance_mm: Surface elements closer than this (<=) to the other surface count as correct.

    Returns:
        NSD in [0, 1]; NaN if both masks are empty, 0 if exactly one is.
    """
    return nsd_from_distances(surface_distances(pred, gt, spacing), tolerance_mm)


def hd95(
    pred: np.ndarray | torch.Tensor,
    gt: np.ndarray | torch.Tensor,
    spacing: Sequence[float] | None = None,
) -> float:
    """95th-percentile symmetric Hausdorff distance in mm.

    Returns:
        HD95 >= 0; NaN if both masks are empty, ``inf`` if exactly one is.
    """
    return hd_from_distances(surface_distances(pred, gt, spacing), 95.0)


def worst_case_distance_mm(shape: Sequence[int], spacing: Sequence[float] | None) -> float:
    """The image diagonal in mm: ``sqrt(sum((n_a * s_a)^2))`` over the axes.

    The HD95 reports give a structure that one mask misses entirely (no distance is
    defined): no surface distance inside the image can be larger, so a miss never scores
    better than a poor segmentation.
    """
    sp = _check_spacing(spacing, len(shape))
    return float(math.sqrt(sum((float(n) * s) ** 2 for n, s in zip(shape, sp, strict=True))))


def compute_metrics(
    pred: np.ndarray | torch.Tensor,
    gt: np.ndarray | torch.Tensor,
    spacing: Sequence[float] | None = None,
    *,
    tolerance_mm: float = 1.0,
    metrics: Iterable[str] = METRIC_NAMES,
    hd95_missing: float = math.inf,
) -> dict[str, float]:
    """Several metrics at once, sharing one surface-distance computation.

    Args:
        pred: ``(I, J, K)`` predicted mask.
        gt: ``(I, J, K)`` ground-truth mask.
        spacing: Voxel size (mm) along the same axes; None for 1 mm.
        tolerance_mm: NSD tolerance.
        metrics: Names among :data:`METRIC_NAMES`.
        hd95_missing: HD95 when exactly one mask is empty (default ``inf``; reports pass
            :func:`worst_case_distance_mm`).

    Returns:
        ``{name: value}`` in the order requested.
    """
    names = list(metrics)
    unknown = [m for m in names if m not in METRIC_NAMES]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; expected some of {list(METRIC_NAMES)}")
    p, g = _as_bool(pred, "pred"), _as_bool(gt, "gt")
    _check(p, g)
    sd = surface_distances(p, g, spacing) if {"nsd", "hd95"} & set(names) else None
    out: dict[str, float] = {}
    for name in names:
        if name == "dice":
            out[name] = dice(p, g)
        elif name == "iou":
            out[name] = iou(p, g)
        elif name == "nsd":
            assert sd is not None
            out[name] = nsd_from_distances(sd, tolerance_mm)
        else:
            assert sd is not None
            value = hd_from_distances(sd, 95.0)
            out[name] = float(hd95_missing) if math.isinf(value) else value
    return out


#: More distinct values than this (without ``labels=``) and a file is taken for an image.
MAX_LABELS = 1000

#: With more distinct non-zero values than this (without ``labels=``), a file whose
#: neighbouring voxels mostly differ is taken for an image: a label map's regions are constant
#: (an atlas: over 80% of neighbouring foreground voxel pairs equal, a map of 3x3x3 cubes 50%;
#: an MRI with integer intensities: under 10%).
MANY_LABELS = 16
MIN_EQUAL_NEIGHBOURS = 0.25


def equal_neighbour_fraction(array: np.ndarray) -> float:
    """Share of neighbouring voxel pairs (not both zero) that hold the same value, along the
    axis where it is highest (thick slices lower it along one axis only); 1.0 without pairs."""
    shares = []
    for axis in range(array.ndim):
        a = np.moveaxis(array, axis, 0)
        head, tail = a[1:], a[:-1]
        pairs = np.count_nonzero((head != 0) | (tail != 0))
        if pairs:
            shares.append(np.count_nonzero((head == tail) & (head != 0)) / pairs)
    return float(max(shares)) if shares else 1.0


def check_label_map(
    volume: Volume, what: str, *, max_labels: int | None = MAX_LABELS
) -> np.ndarray:
    """Raise :class:`VolumeError` unless ``volume`` holds a label map.

    A label map holds non-negative integers (stored as an integer or bool type, or as floats
    with integer values) and, unless ``max_labels`` is None, at most ``max_labels`` distinct
    non-zero values; with more than :data:`MANY_LABELS` of them, its neighbouring voxels must
    mostly be equal (:func:`equal_neighbour_fraction`; an intensity image with integer voxels
    fails this). The message says what the file holds instead.

    Returns:
        The sorted non-zero label values (int64).
    """
    arr = volume.array
    where = f"{what} ({volume.path})" if volume.path is not None else what
    if arr.dtype == np.bool_:
        return np.array([1], dtype=np.int64) if arr.any() else np.zeros(0, dtype=np.int64)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise VolumeError(f"{where} is not a label map: voxel type {arr.dtype}")
    values = np.unique(arr)
    lo, hi = values[0], values[-1]
    if np.issubdtype(values.dtype, np.floating):
        frac = values[values != np.round(values)]
        if frac.size:
            raise VolumeError(
                f"{where} is not a label map: it holds non-integer values (e.g. "
                f"{', '.join(f'{v:g}' for v in frac[:3])}; {values.size} distinct values from "
                f"{lo:g} to {hi:g}); an intensity image?"
            )
    if lo < 0:
        raise VolumeError(
            f"{where} is not a label map: it holds negative values ({values.size} distinct "
            f"values from {lo:g} to {hi:g}); an intensity image?"
        )
    labels = values[values != 0]
    n = int(labels.size)
    if n:
        lo = labels[0]  # the range of the labels, not of the background
    if max_labels is not None and n > max_labels:
        raise VolumeError(
            f"{where} does not look like a label map: {n} distinct non-zero values (from "
            f"{lo:g} to {hi:g}), more than {max_labels}; an intensity image? (pass the labels "
            "to score explicitly to go on)"
        )
    if max_labels is not None and n > MANY_LABELS:
        same = equal_neighbour_fraction(arr)
        if same < MIN_EQUAL_NEIGHBOURS:
            raise VolumeError(
                f"{where} does not look like a label map: {n} distinct non-zero values (from "
                f"{lo:g} to {hi:g}) and only {same:.0%} of neighbouring voxels share a value "
                "(a label map's regions are constant); an intensity image? (pass the labels to "
                "score explicitly to go on)"
            )
    return labels.astype(np.int64)


def check_same_grid(
    pred: Volume,
    gt: Volume,
    *,
    atol_mm: float = 1e-3,
    names: tuple[str, str] = ("prediction", "ground-truth"),
) -> None:
    """Raise :class:`VolumeError` unless both volumes share shape, spacing, origin, direction
    (the message calls them ``names``)."""
    a, b = names
    if pred.shape != gt.shape:
        raise VolumeError(f"{a} shape {pred.shape} != {b} shape {gt.shape}")
    if not np.allclose(pred.spacing, gt.spacing, rtol=1e-4, atol=atol_mm):
        raise VolumeError(
            f"{a} spacing {tuple(round(s, 4) for s in pred.spacing)} != {b} "
            f"spacing {tuple(round(s, 4) for s in gt.spacing)}"
        )
    # the direction first: a flipped or permuted axis also moves the origin
    if not np.allclose(pred.direction, gt.direction, atol=1e-4):
        raise VolumeError(
            f"{a} direction {np.round(pred.direction, 4).tolist()} != {b} "
            f"direction {np.round(gt.direction, 4).tolist()} (LPS; {direction_note(pred, gt)})"
        )
    if not np.allclose(pred.origin, gt.origin, atol=max(atol_mm, 1e-3 * min(gt.spacing))):
        raise VolumeError(
            f"{a} origin {tuple(round(o, 3) for o in pred.origin)} != {b} "
            f"origin {tuple(round(o, 3) for o in gt.origin)} (mm, LPS: ITK's axes; nibabel "
            "shows x and y negated)"
        )


def direction_note(a: Volume, b: Volume) -> str:
    """``axes RAS vs LPS`` (nibabel's axis codes of each), and whether the two grids cover
    the same voxels in space (a file stored in another axis order); for grid messages."""
    import nibabel as nib

    codes = ["".join(nib.orientations.aff2axcodes(v.affine)) for v in (a, b)]
    note = f"axes {codes[0]} vs {codes[1]}"
    corners = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], float)
    ends = [corners * (np.asarray(v.shape, float) - 1) for v in (a, b)]
    pa = np.sort(np.round(a.index_to_physical(ends[0]), 3), axis=0)
    pb = np.sort(np.round(b.index_to_physical(ends[1]), 3), axis=0)
    if pa.shape == pb.shape and np.allclose(pa, pb, atol=1e-2):
        note += ": the same voxels stored in another axis order; reorient one to the other"
    return note


def label_map_metrics(
    pred: Volume,
    gt: Volume,
    *,
    tolerance_mm: float = 1.0,
    labels: Sequence[int] | None = None,
    metrics: Iterable[str] = METRIC_NAMES,
    names: tuple[str, str] = ("the prediction", "the ground truth"),
) -> dict[int, dict[str, float | int]]:
    """Per-label metrics of two label maps on the same grid (physical spacing of ``gt``).

    Every non-zero value of the ground truth is a label; values only present in the
    prediction are reported too (empty ground truth: Dice 0). Binary masks are label maps
    with the single label 1. HD95 of a label that one map lacks is the image diagonal
    (:func:`worst_case_distance_mm`), never ``inf``.

    Args:
        pred: Predicted label map.
        gt: Ground-truth label map.
        tolerance_mm: NSD tolerance.
        labels: Only these label values (default: all non-zero values of either map).
        metrics: Names among :data:`METRIC_NAMES`.
        names: How errors name ``pred`` and ``gt`` (the CLI: ``--pred``, ``--gt``).

    Returns:
        ``{label: {"gt_voxels", "pred_voxels", metric: value, ...}}`` in label order.

    Raises:
        VolumeError: different grids, or a file that is not a label map
            (:func:`check_label_map`).
    """
    check_same_grid(pred, gt)
    limit = MAX_LABELS if labels is None else None
    gt_values = check_label_map(gt, names[1], max_labels=limit)
    pred_values = check_label_map(pred, names[0], max_labels=limit)
    names = list(metrics)
    worst = worst_case_distance_mm(gt.shape, gt.spacing)
    if labels is None:
        found = np.union1d(gt_values, pred_values)
        label_list = [int(v) for v in found]
    else:
        label_list = [int(v) for v in labels]
    out: dict[int, dict[str, float | int]] = {}
    for value in label_list:
        p, g = pred.array == value, gt.array == value
        row: dict[str, float | int] = {
            "gt_voxels": int(np.count_nonzero(g)),
            "pred_voxels": int(np.count_nonzero(p)),
        }
        row.update(
            compute_metrics(
                p, g, gt.spacing, tolerance_mm=tolerance_mm, metrics=names, hd95_missing=worst
            )
        )
        out[value] = row
    return out


def summarize(values: Iterable[float]) -> dict[str, float | int | None]:
    """Mean ± std over the finite values; counts NaN and infinite values separately.

    Returns:
        ``{"mean", "std", "n", "n_nan", "n_inf"}``: ``n`` counts the finite values; the std is
        the population std (ddof 0, as ``np.std``); mean/std are None when ``n == 0``.
    """
    arr = np.asarray(list(values), dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    n = int(finite.size)
    return {
        "mean": float(finite.mean()) if n else None,
        "std": float(finite.std()) if n else None,
        "n": n,
        "n_nan": int(np.isnan(arr).sum()),
        "n_inf": int(np.isinf(arr).sum()),
    }


class MetricAccumulator:
    """Collects metric values per group and summarises them (NaN/inf excluded and counted).

    Example:
        >>> acc = MetricAccumulator()
        >>> acc.add(("liver", 1), {"dice": 0.9, "nsd": 0.8})
        >>> acc.add(("liver", 1), {"dice": float("nan"), "nsd": float("nan")})
        >>> acc.summary()[("liver", 1)]["dice"]["mean"]
        0.9
    """

    def __init__(self) -> None:
        self._values: dict[Any, dict[str, list[float]]] = {}

    def add(self, key: Any, values: Mapping[str, float]) -> None:
        """Record one set of metric values under a hashable group key."""
        group = self._values.setdefault(key, {})
        for name, value in values.items():
            group.setdefault(name, []).append(float(value))

    def merge(self, other: MetricAccumulator) -> None:
        """Add all values of another accumulator (e.g. from another shard)."""
        for key, group in other._values.items():
            mine = self._values.setdefault(key, {})
            for name, vals in group.items():
                mine.setdefault(name, []).extend(vals)

    def all_gather(self) -> None:
        """Merge the accumulators of all ranks in place (no-op without torch.distributed)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, self._values)
        merged = MetricAccumulator()
        for values in gathered:
            other = MetricAccumulator()
            other._values = values
            merged.merge(other)
        self._values = merged._values

    def keys(self) -> list[Any]:
        return list(self._values)

    def values(self, key: Any, name: str) -> list[float]:
        return list(self._values.get(key, {}).get(name, []))

    def summary(self) -> dict[Any, dict[str, dict[str, float | int | None]]]:
        """``{key: {metric: summarize(values)}}``."""
        return {
            key: {name: summarize(vals) for name, vals in group.items()}
            for key, group in self._values.items()
        }


def json_safe(value: Any) -> Any:
    """Replace non-finite floats (NaN, inf) by None, recursively, for strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value


__all__ = [
    "METRIC_NAMES",
    "MetricAccumulator",
    "SurfaceDistances",
    "check_label_map",
    "check_same_grid",
    "compute_metrics",
    "dice",
    "hd95",
    "hd_from_distances",
    "iou",
    "json_safe",
    "label_map_metrics",
    "nsd",
    "nsd_from_distances",
    "summarize",
    "surface_distances",
    "worst_case_distance_mm",
]
