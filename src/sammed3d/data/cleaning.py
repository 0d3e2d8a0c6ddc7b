"""The SAM-Med3D 4-step mask cleaning (paper §3.2), as pure functions on numpy arrays.

Per binary mask (one class of one case), in this order:

1. **Meta-information filter**: drop masks whose physical volume is below
   ``min_volume_mm3`` (1 cm³) or any side of whose bounding box is below ``min_extent_mm``
   (1.5 cm).
2. **Connected components**: compute the components and the background share; drop masks
   whose background exceeds ``max_background_fraction`` (99 %) of the volume.
3. **Label quality**: keep only the ``max_components`` (5) largest components.
4. **Symmetry split**: masks of paired structures (kidney, lung, ...) are split into
   ``<name>_left`` / ``<name>_right`` by component, using the side of each component's
   centroid in patient (RAS) coordinates. Each side is checked by step 1 again.

Plus :func:`check_integrity` for an image/label pair (geometry, NaNs, label values). Nothing
here reads or writes files; :mod:`sammed3d.data.prepare` does the I/O.

Example::

    >>> results = clean_mask(label == 3, affine, "Kidney", CleaningConfig())
    >>> [(r.class_name, r.kept, r.rule) for r in results]
    [('kidney_left', True, None), ('kidney_right', True, None)]
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from sammed3d.data.cleaning_config import PAIRED_STRUCTURES, CleaningConfig
from sammed3d.io import Volume

logger = logging.getLogger(__name__)

#: Drop rules, in the order they are applied (manifest ``rule`` values).
RULE_EMPTY = "empty"
RULE_MIN_VOLUME = "min_volume"
RULE_MIN_EXTENT = "min_extent"
RULE_MAX_BACKGROUND = "max_background"

Side = Literal["left", "right"]


@dataclass(frozen=True)
class MaskStats:
    """Size facts of a binary mask.

    Attributes:
        voxels: Foreground voxel count.
        volume_mm3: ``voxels`` times the voxel volume.
        bbox_voxels: ``(start, stop)`` voxel indices along ``(i, j, k)``, stop exclusive;
            ``None`` for an empty mask.
        bbox_mm: Bounding-box side lengths along ``(i, j, k)`` in mm (0 when empty).
        background_fraction: Share of the volume's voxels that are not foreground.
    """

    voxels: int
    volume_mm3: float
    bbox_voxels: tuple[tuple[int, int, int], tuple[int, int, int]] | None
    bbox_mm: tuple[float, float, float]
    background_fraction: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "voxels": self.voxels,
            "volume_mm3": round(self.volume_mm3, 3),
            "bbox_voxels": [list(b) for b in self.bbox_voxels] if self.bbox_voxels else None,
            "bbox_mm": [round(s, 3) for s in self.bbox_mm],
            "background_fraction": round(self.background_fraction, 6),
        }


@dataclass
class CleanedMask:
    """Outcome of cleaning one mask (one output class; two for a split paired structure).

    Attributes:
        class_name: Normalised output class name (``"kidney_left"`` after a split).
        source_class: The class name as the source declared it.
        kept: Whether the mask passed all rules.
        rule: The rule that dropped it (``None`` if kept).
        message: Human-readable reason (``None`` if kept).
        stats: Size facts of the final mask (after steps 3-4), or of the mask that was
            dropped at the step that dropped it.
        components: Number of connected components before step 3.
        components_removed: Components removed by step 3.
        voxels_removed: Voxels removed by step 3.
        side: ``"left"``/``"right"`` for split structures, else ``None``.
        mask: The cleaned boolean mask ``(I, J, K)`` when kept, else ``None``.
    """

    class_name: str
    source_class: str
    kept: bool
    rule: str | None
    message: str | None
    stats: MaskStats
    components: int = 0
    components_removed: int = 0
    voxels_removed: int = 0
    side: Side | None = None
    mask: np.ndarray | None = field(default=None, repr=False)

    def to_record(self) -> dict[str, Any]:
        """Manifest fields (without the mask)."""
        return {
            "class_name": self.class_name,
            "source_class": self.source_class,
            "side": self.side,
            "status": "kept" if self.kept else "dropped",
            "rule": self.rule,
            "message": self.message,
            **self.stats.to_dict(),
            "components": self.components,
            "components_removed": self.components_removed,
            "voxels_removed": self.voxels_removed,
        }


def normalise_class_name(name: str) -> str:
    """Category key of a class name: lower case, words joined by ``_``.

    ``"Liver"``, ``"liver"`` and ``" LIVER "`` -> ``"liver"``; ``"Adrenal Gland"`` and
    ``"adrenal-gland"`` -> ``"adrenal_gland"``.

    Raises:
        ValueError: the name has no letters or digits.
    """
    key = re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_")
    if not key:
        raise ValueError(f"class name {name!r} has no letters or digits")
    return key


def paired_base(name: str, paired: Iterable[str] = PAIRED_STRUCTURES) -> str | None:
    """The paired-structure name ``name`` refers to (``"Kidneys"`` -> ``"kidney"``), or None."""
    key = normalise_class_name(name)
    for base in paired:
        if key in (base, f"{base}s", f"{base}es"):
            return base
    return None


def mask_stats(mask: np.ndarray, spacing: Iterable[float]) -> MaskStats:
    """Voxel count, physical volume and bounding box of a binary mask.

    Args:
        mask: Boolean or 0/1 array ``(I, J, K)``.
        spacing: Voxel size along ``(i, j, k)`` in mm.
    """
    mask = np.asarray(mask, dtype=bool)
    spacing_arr = np.asarray(tuple(spacing), dtype=np.float64)
    if mask.ndim != 3 or spacing_arr.shape != (3,):
        raise ValueError(
            f"expected a 3-D mask and 3 spacings, got shape {mask.shape} and {spacing_arr}"
        )
    voxels = int(mask.sum())
    total = mask.size
    if voxels == 0:
        return MaskStats(0, 0.0, None, (0.0, 0.0, 0.0), 1.0)
    lo: list[int] = []
    hi: list[int] = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        lo.append(int(present[0]))
        hi.append(int(present[-1]) + 1)
    extent = (np.asarray(hi) - np.asarray(lo)) * spacing_arr
    return MaskStats(
        voxels=voxels,
        volume_mm3=float(voxels * np.prod(spacing_arr)),
        bbox_voxels=((lo[0], lo[1], lo[2]), (hi[0], hi[1], hi[2])),
        bbox_mm=(float(extent[0]), float(extent[1]), float(extent[2])),
        background_fraction=float(1.0 - voxels / total),
    )


def crop_background_fraction(mask: np.ndarray, stats: MaskStats, size: int) -> float:
    """Background share of the ``size``-voxel cube centred on the mask's bounding box."""
    if stats.bbox_voxels is None:
        return 1.0
    lo, hi = np.asarray(stats.bbox_voxels[0]), np.asarray(stats.bbox_voxels[1])
    start = (lo + hi) // 2 - size // 2
    stop = start + size
    clip_lo = np.maximum(start, 0)
    clip_hi = np.minimum(stop, mask.shape)
    window = mask[clip_lo[0] : clip_hi[0], clip_lo[1] : clip_hi[1], clip_lo[2] : clip_hi[2]]
    return float(1.0 - np.count_nonzero(window) / float(size) ** 3)


def meta_filter(stats: MaskStats, config: CleaningConfig) -> tuple[str, str] | None:
    """Step 1: ``(rule, message)`` if the mask is too small, else ``None``."""
    if stats.voxels == 0:
        return RULE_EMPTY, "mask is empty"
    if stats.volume_mm3 < config.min_volume_mm3:
        return (
            RULE_MIN_VOLUME,
            f"volume {stats.volume_mm3:.1f} mm³ < {config.min_volume_mm3:g} mm³",
        )
    smallest = min(stats.bbox_mm)
    if smallest < config.min_extent_mm:
        sides = ", ".join(f"{s:.1f}" for s in stats.bbox_mm)
        return (
            RULE_MIN_EXTENT,
            f"bounding box ({sides}) mm has a side < {config.min_extent_mm:g} mm",
        )
    return None


def connected_components(
    mask: np.ndarray, connectivity: int = 26
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label the components of a binary mask, largest first.

    Args:
        mask: Boolean array ``(I, J, K)``.
        connectivity: 6, 18 or 26.

    Returns:
        ``(labels, sizes, centroids)``: ``labels`` ``(I, J, K)`` int32 where component ``n``
        (1-based) is the ``n``-th largest (ties: smaller centroid ``(i, j, k)`` first); ``sizes``
        ``(N,)`` voxel counts in that order; ``centroids`` ``(N, 3)`` voxel-index centroids.
    """
    import cc3d

    mask = np.ascontiguousarray(mask, dtype=bool)
    raw, n = cc3d.connected_components(mask, connectivity=connectivity, return_N=True)
    if n == 0:
        return np.zeros(mask.shape, np.int32), np.zeros(0, np.int64), np.zeros((0, 3))
    stats = cc3d.statistics(raw)
    sizes = np.asarray(stats["voxel_counts"][1:], dtype=np.int64)
    centroids = np.asarray(stats["centroids"][1:], dtype=np.float64)
    # Largest first; ties ordered by centroid (i, j, k) so the result does not depend on
    # the labelling order of the CC implementation.
    order = np.lexsort((centroids[:, 2], centroids[:, 1], centroids[:, 0], -sizes))
    remap = np.zeros(n + 1, dtype=np.int32)
    remap[order + 1] = np.arange(1, n + 1, dtype=np.int32)
    return remap[raw], sizes[order], centroids[order]


def keep_largest_components(
    labels: np.ndarray, sizes: np.ndarray, k: int
) -> tuple[np.ndarray, int, int]:
    """Step 3: the mask of the ``k`` largest components.

    Args:
        labels: Component labels from :func:`connected_components` (largest = 1).
        sizes: Their sizes, largest first.
        k: How many to keep (``0`` keeps all).

    Returns:
        ``(mask, components_removed, voxels_removed)``.
    """
    n = len(sizes)
    if k <= 0 or n <= k:
        return labels > 0, 0, 0
    return (labels > 0) & (labels <= k), n - k, int(sizes[k:].sum())


def component_sides(centroids: np.ndarray, affine: np.ndarray, midline_x: float) -> list[Side]:
    """Patient side of each component centroid.

    Args:
        centroids: ``(N, 3)`` voxel-index centroids.
        affine: ``4 x 4`` voxel -> RAS+ mm.
        midline_x: RAS ``x`` (mm) of the body's mid-sagittal plane.

    Returns:
        ``"right"`` where RAS ``x`` > ``midline_x`` (RAS+ ``x`` grows toward the patient's
        right), else ``"left"``.
    """
    if len(centroids) == 0:
        return []
    ras = np.c_[centroids, np.ones(len(centroids))] @ np.asarray(affine, np.float64).T
    return ["right" if x > midline_x else "left" for x in ras[:, 0]]


def volume_midline_x(shape: Iterable[int], affine: np.ndarray) -> float:
    """RAS ``x`` of the centre of a volume's field of view."""
    centre = (np.asarray(tuple(shape), np.float64) - 1) / 2
    return float((np.asarray(affine, np.float64) @ np.r_[centre, 1.0])[0])


def body_midline_x(image: Volume) -> float:
    """RAS ``x`` of the body's centre of mass, the reference plane for left/right.

    The body is the set of voxels brighter than the image mean (air and the zero background
    of MR are darker). Falls back to the field-of-view centre for a constant image.
    """
    arr = np.asarray(image.array, dtype=np.float32)
    finite = np.isfinite(arr)
    if not finite.any():
        return volume_midline_x(image.shape, image.affine)
    body = finite & (arr > float(arr[finite].mean()))
    if not body.any():
        return volume_midline_x(image.shape, image.affine)
    # Centre of mass per axis without materialising all coordinates.
    counts_i = body.sum(axis=(1, 2)).astype(np.float64)
    counts_j = body.sum(axis=(0, 2)).astype(np.float64)
    counts_k = body.sum(axis=(0, 1)).astype(np.float64)
    total = counts_i.sum()
    centre = np.array(
        [
            (np.arange(len(counts_i)) * counts_i).sum() / total,
            (np.arange(len(counts_j)) * counts_j).sum() / total,
            (np.arange(len(counts_k)) * counts_k).sum() / total,
        ]
    )
    return float((image.affine @ np.r_[centre, 1.0])[0])


def clean_mask(
    mask: np.ndarray,
    affine: np.ndarray,
    class_name: str,
    config: CleaningConfig | None = None,
    *,
    midline_x: float | None = None,
) -> list[CleanedMask]:
    """Apply the four cleaning steps to one binary mask.

    Args:
        mask: Boolean array ``(I, J, K)`` (one class of one case).
        affine: ``4 x 4`` voxel -> RAS+ mm of the mask's grid (gives spacing and sides).
        class_name: The class name as the source declares it.
        config: Thresholds (paper defaults when ``None``).
        midline_x: RAS ``x`` of the body midline for step 4; defaults to the centre of the
            field of view (see :func:`body_midline_x` for a better estimate from the image).

    Returns:
        One :class:`CleanedMask`, or two (left, right) for a paired structure that reached
        step 4. Dropped masks carry the rule and a message; kept ones carry the mask.
    """
    config = config or CleaningConfig()
    mask = np.asarray(mask).astype(bool, copy=False)
    if mask.ndim != 3:
        raise ValueError(f"expected a 3-D mask (I, J, K), got shape {mask.shape}")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {affine.shape}")
    spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
    name = normalise_class_name(class_name)

    stats = mask_stats(mask, spacing)
    dropped = meta_filter(stats, config)  # step 1
    if dropped:
        return [CleanedMask(name, class_name, False, dropped[0], dropped[1], stats)]

    labels, sizes, centroids = connected_components(mask, config.connectivity)  # step 2
    n_comp = len(sizes)
    background, where = stats.background_fraction, "the volume"
    if config.background_crop is not None:
        background = crop_background_fraction(mask, stats, config.background_crop)
        where = f"the {config.background_crop}³ crop around it"
    if background > config.max_background_fraction:
        msg = (
            f"background is {100 * background:.2f}% of {where} "
            f"(> {100 * config.max_background_fraction:g}%)"
        )
        return [CleanedMask(name, class_name, False, RULE_MAX_BACKGROUND, msg, stats, n_comp)]

    kept, n_removed, vox_removed = keep_largest_components(  # step 3
        labels, sizes, config.max_components
    )
    n_kept = n_comp - n_removed

    common = {
        "source_class": class_name,
        "components": n_comp,
        "components_removed": n_removed,
        "voxels_removed": vox_removed,
    }
    base = paired_base(name, config.paired_classes) if config.split_paired else None
    if base is None:
        final = mask_stats(kept, spacing)
        return [
            CleanedMask(name, kept=True, rule=None, message=None, stats=final, mask=kept, **common)
        ]

    # step 4: split by the side of each kept component.
    if midline_x is None:
        midline_x = volume_midline_x(mask.shape, affine)
    sides = component_sides(centroids[:n_kept], affine, midline_x)
    results: list[CleanedMask] = []
    side: Side
    for side in ("left", "right"):
        ids = [i + 1 for i, s in enumerate(sides) if s == side]
        side_mask = np.isin(labels, ids) if ids else np.zeros_like(kept)
        side_stats = mask_stats(side_mask, spacing)
        dropped = meta_filter(side_stats, config)  # step 1 again, per side
        results.append(
            CleanedMask(
                f"{base}_{side}",
                kept=dropped is None,
                rule=dropped[0] if dropped else None,
                message=f"{side} side: {dropped[1]}" if dropped else None,
                stats=side_stats,
                side=side,
                mask=None if dropped else side_mask,
                **common,
            )
        )
    logger.debug("split %s into %s", class_name, [(r.class_name, r.kept) for r in results])
    return results


# ---------------------------------------------------------------------------------------------
# integrity


@dataclass(frozen=True)
class IntegrityProblem:
    """One failed integrity check of an image/label pair."""

    rule: str
    message: str


def check_integrity(
    image: Volume,
    label: Volume,
    declared_values: Iterable[int] | None = None,
    *,
    spacing_rtol: float = 1e-3,
    origin_atol_mm: float = 1e-2,
    direction_atol: float = 1e-3,
) -> list[IntegrityProblem]:
    """Check that an image and its label agree and hold sane values (nnU-Net-style).

    Checks: same shape, spacing, origin and direction; finite image voxels; integer-valued,
    non-negative label voxels; label values among ``declared_values`` (background 0 is
    always allowed).

    Args:
        image: The image volume.
        label: The label volume.
        declared_values: Allowed non-background values (e.g. from ``dataset.json``);
            ``None`` skips that check.
        spacing_rtol: Relative tolerance on the spacing.
        origin_atol_mm: Absolute tolerance on the origin.
        direction_atol: Absolute tolerance on the direction cosines.

    Returns:
        The problems found (empty when the pair is fine). Rules are ``integrity:<what>``.
    """
    problems: list[IntegrityProblem] = []

    def add(what: str, message: str) -> None:
        problems.append(IntegrityProblem(f"integrity:{what}", message))

    if image.shape != label.shape:
        add("shape", f"image shape {image.shape} != label shape {label.shape}")
    sp_i, sp_l = np.asarray(image.spacing), np.asarray(label.spacing)
    if not np.allclose(sp_i, sp_l, rtol=spacing_rtol, atol=0):
        add("spacing", f"image spacing {_fmt(sp_i)} != label spacing {_fmt(sp_l)}")
    or_i, or_l = np.asarray(image.origin), np.asarray(label.origin)
    if not np.allclose(or_i, or_l, rtol=0, atol=origin_atol_mm):
        add(
            "origin",
            f"image origin {_fmt(or_i)} != label origin {_fmt(or_l)} (mm, LPS: ITK's axes; "
            "nibabel shows x and y negated)",
        )
    if not np.allclose(image.direction, label.direction, rtol=0, atol=direction_atol):
        add(
            "direction",
            f"image direction {_fmt(image.direction.ravel())} != label direction "
            f"{_fmt(label.direction.ravel())} (LPS, row by row)",
        )
    arr = image.array
    if np.issubdtype(arr.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            add("nan_image", f"image has {bad} NaN/Inf voxels")
    lab = label.array
    if np.issubdtype(lab.dtype, np.floating):
        if not np.isfinite(lab).all():
            add("label_values", "label has NaN/Inf voxels")
            return problems
        if not np.array_equal(lab, np.round(lab)):
            add("label_values", "label has non-integer values (is it a probability map?)")
            return problems
    values = np.unique(lab)
    if values.size and values[0] < 0:
        add("label_values", f"label has negative values, e.g. {values[0]}")
    if declared_values is not None:
        allowed = {0, *(int(v) for v in declared_values)}
        extra = sorted(int(v) for v in values if int(v) not in allowed)
        if extra:
            add(
                "unexpected_labels",
                f"label values {extra[:10]} are not declared (declared: {sorted(allowed)})",
            )
    return problems


def _fmt(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in np.ravel(values)) + ")"
