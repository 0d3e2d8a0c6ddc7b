"""Click methods: what the evaluation harness drives, the model and a classical baseline.

A *click method* turns simulated clicks into native-space masks. The harness
(:mod:`sammed3d.evaluation.evaluator`) only talks to a :class:`ClickMethod`:

1. ``set_image(image, modality=...)`` once per case (the native volume, as read from disk);
2. ``start_target(roi_mask=..., gt=...)`` once per binary target;
3. ``add_click(click) -> mask`` for each simulated click; the mask is the native-space
   prediction after all clicks so far.

``roi_mask`` is the ground truth when the ROI is to be placed as the published protocol does
(centred on the ground-truth bounding box, ``--roi gt``); only its bounding box may be used.
It is None for ``--roi click`` (the method places its ROI on the first click, as in
interactive use). Methods that set ``uses_gt = True`` also receive the ground truth itself
as ``gt`` (baselines that simulate their own prompts, such as a slice-by-slice 2-D protocol,
and test oracles); the run's ``config.json``/``summary.json`` record it. The model must not
use it.

A method that runs a model may name it in ``model_name`` (the run records it as
``run.model``; the progress bar and the plot title show it, as ``name`` says only which kind
of method ran).

Optionally a method implements ``roi_contains(coords) -> bool array`` (native ``(N, 3)``
voxel indices -> whether the current target's ROI covers them, or None before the ROI is
placed). With ``--roi gt`` the harness then draws the first click from the ground truth
inside that ROI, as the published protocol draws it from the cropped ground truth.

The methods here:

* :class:`ModelMethod`: the model, through the ``InteractiveSession`` users run (so the
  evaluated code is the code users run); not to be confused with
  :class:`sammed3d.inference.SamMed3DPredictor`, the model-level predictor the session uses.
* :class:`RegionGrowing`: a classical baseline seeded with the very same clicks.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from sammed3d.clicks import Click
from sammed3d.data.transforms import bbox_center
from sammed3d.io import Volume

if TYPE_CHECKING:
    from sammed3d.inference.session import InteractiveSession

logger = logging.getLogger(__name__)


@runtime_checkable
class ClickMethod(Protocol):
    """What the evaluation harness drives (one binary target at a time).

    Attributes:
        name: Method name recorded in the outputs.
        uses_gt: Whether ``start_target`` must receive the ground truth (oracle baselines).
    """

    name: str
    uses_gt: bool

    def set_image(self, image: Volume, *, modality: str | None = None) -> None:
        """Prepare a new case (the native image volume; modality ``"CT"``, ``"MR"``, ...)."""
        ...

    def start_target(self, *, roi_mask: np.ndarray | None, gt: np.ndarray | None) -> None:
        """Forget previous clicks and start a new target.

        Args:
            roi_mask: ``(I, J, K)`` bool mask whose bounding box centres the ROI (the
                published protocol), or None to place the ROI on the first click.
            gt: ``(I, J, K)`` bool ground truth, only for methods with ``uses_gt``.
        """
        ...

    def add_click(self, click: Click) -> np.ndarray:
        """Add one click (native voxel index); returns the ``(I, J, K)`` bool prediction."""
        ...


class ModelMethod:
    """The model as a click method: adapts :class:`~sammed3d.inference.session.InteractiveSession`.

    Every target is one fresh object of the session (``reset`` + ``new_object``); clicks go
    through :meth:`InteractiveSession.add_point` exactly as a user's clicks, and the returned
    native mask is what gets scored. With ``roi_mask`` (``--roi gt``) the object's ROI is
    placed by :meth:`InteractiveSession.set_roi_from_mask`, the published centring on the
    ground-truth bounding box; otherwise the session centres it on the first click.

    With ``choose_extent=True`` a simulated user also looks at the masks the first click
    could get (:meth:`InteractiveSession.extents`) and takes the one with the highest Dice
    against the ground truth, as a person picks the right extent by looking through them
    (:meth:`InteractiveSession.next_extent`); the later clicks refine that mask. It needs
    the ground truth (``uses_gt``) and is reported as its own method, never as the model's
    click Dice.

    Args:
        session: The session (its predictor's ``extend``/``max_rois`` and the session's
            ``accumulate_clicks`` apply).
        name: Method name recorded in the outputs (``run.method``; the model's own name is
            :attr:`model_name`).
        choose_extent: Simulate the extent choice after the first click.

    Raises:
        TypeError: ``session`` is not an :class:`InteractiveSession`.
        ValueError: ``choose_extent`` with a model that decodes one mask per click.

    Example:
        >>> method = ModelMethod.from_checkpoint("sam_med3d_turbo.pth", device="cuda")
        >>> evaluate_targets(method, targets, "eval_out")
    """

    uses_gt = False

    def __init__(
        self, session: InteractiveSession, *, name: str = "sam_med3d", choose_extent: bool = False
    ) -> None:
        from sammed3d.inference.session import InteractiveSession  # the model stack: on use

        if not isinstance(session, InteractiveSession):
            raise TypeError(f"expected an InteractiveSession, got {type(session).__name__}")
        if choose_extent and not session.predictor.offers_extents():
            raise ValueError(
                "choose_extent needs a model that offers several extents at a first click "
                "(trained with first_click_multimask); this one decodes one mask per click"
            )
        self.session = session
        self.name = name
        self.choose_extent = bool(choose_extent)
        self.uses_gt = self.choose_extent
        self._gt: np.ndarray | None = None

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | os.PathLike[str] | None = None,
        *,
        device: str = "cpu",
        allow_unsafe_pickle: bool = False,
        accumulate_clicks: bool | None = None,
        choose_extent: bool = False,
        **predictor_kwargs: Any,
    ) -> ModelMethod:
        """Load a checkpoint into a :class:`SamMed3DPredictor` and a session.

        Args:
            checkpoint: Checkpoint file (None: the default checkpoint, see
                :func:`sammed3d.paths.require_checkpoint`).
            device: Where to run the model.
            allow_unsafe_pickle: See :func:`sammed3d.load_checkpoint`.
            accumulate_clicks: Give the model every click of the object at each step (current
                MedIM scripts) instead of only the newest one (legacy ``validation.py`` and
                training). None: what the model was trained with.
            choose_extent: See the class.
            **predictor_kwargs: Passed to :class:`SamMed3DPredictor` (e.g. ``extend=False``).
        """
        from sammed3d.inference.predictor import SamMed3DPredictor
        from sammed3d.inference.session import InteractiveSession

        predictor = SamMed3DPredictor.from_checkpoint(
            checkpoint, device, allow_unsafe_pickle=allow_unsafe_pickle, **predictor_kwargs
        )
        session = InteractiveSession(predictor, accumulate_clicks=accumulate_clicks)
        return cls(session, choose_extent=choose_extent)

    @functools.cached_property
    def model_name(self) -> str:
        """The model's name (:func:`sammed3d.build.model_name`: ``sam_med3d_demo`` for the
        bundled weights, ``sam_med3d_turbo``, ...), recorded as ``run.model``."""
        from sammed3d.build import model_name

        return model_name(self.session.predictor.model)

    @property
    def settings(self) -> dict[str, Any]:
        """The settings that change results (recorded in ``config.json``)."""
        p = self.session.predictor
        return {
            "target_spacing": list(p.target_spacing),
            "roi_size": p.roi_size,
            "extend": p.extend,
            "max_rois": p.max_rois,
            "accumulate_clicks": self.session.accumulate_clicks,
            "zoom_spacing": p.zoom_spacing,
            "zoom_fill": p.zoom_fill,
            "fine_zoom_spacing": p.fine_zoom_spacing,
            "rim_edit": p.rim_edit,
            "refine_boundary": p.refine_boundary,
            "contrast_guard": p.contrast_guard,
            "first_pick": p.first_pick,
            "later_check": p.later_check,
            "click_bounds": p.click_bounds,
            "choose_extent": self.choose_extent,
        }

    def set_image(self, image: Volume, *, modality: str | None = None) -> None:
        self.session.set_image(image, modality=modality)

    def start_target(self, *, roi_mask: np.ndarray | None, gt: np.ndarray | None = None) -> None:
        if self.choose_extent and gt is None:
            raise ValueError("choose_extent needs the ground truth of every target")
        self._gt = gt
        self.session.reset()
        self.session.new_object()
        if roi_mask is not None:
            try:
                self.session.set_roi_from_mask(roi_mask)
            except ValueError:
                # a target smaller than one lattice voxel vanishes when the mask is resampled
                # to 1.5 mm: centre the ROI on its bounding box in native space instead, so
                # every method gets every target (region growing handles tiny ones too)
                self.session.set_roi_center(bbox_center(roi_mask))

    def roi_contains(self, coords: np.ndarray) -> np.ndarray | None:
        """Whether native voxels ``(N, 3)`` lie in the current object's ROI (None if unset)."""
        roi = self.session.roi
        if roi is None:
            return None
        return np.asarray(roi.contains_native(np.asarray(coords, dtype=np.float64)), dtype=bool)

    def add_click(self, click: Click) -> np.ndarray:
        mask = self.session.add_point(click.coord, positive=click.positive)
        if self.choose_extent and len(self.session.clicks) == 1:
            assert self._gt is not None
            scored = extent_dice(self.session, self._gt)
            now = next(s for s in scored if s["current"])
            best = max(scored, key=lambda s: s["dice"])  # the smallest of equal ones
            if best["dice"] > now["dice"]:
                self.session.choose_extent(int(best["index"]))
                mask = self.session.mask
        return mask


def extent_dice(session: InteractiveSession, gt: np.ndarray) -> list[dict[str, Any]]:
    """Each mask the current object's first click could get, scored against ``gt``.

    Every extent (:meth:`InteractiveSession.extents`, smallest first) is taken, scored and
    undone; the object keeps the mask it had.

    Args:
        session: A session whose current object has exactly one click.
        gt: ``(I, J, K)`` bool reference mask.

    Returns:
        Per extent ``{"index", "volume_ml", "dice", "picked", "current"}``: the volume is
        that of the mask as taken (grown through ROI faces where it reaches them),
        ``picked`` the click's pick (the model's, or the one a first-click rule took),
        ``current`` the mask the object has.

    Raises:
        ValueError: see :meth:`InteractiveSession.extents`.
    """
    from sammed3d.evaluation.metrics import dice

    out: list[dict[str, Any]] = []
    for extent in session.extents():
        if extent.current:
            volume_ml = session.voxel_count() * float(np.prod(session.predictor.volume.spacing))
            volume_ml /= 1000.0
        else:
            volume_ml = session.choose_extent(extent.index).volume_ml
        out.append({"index": extent.index, "volume_ml": volume_ml,
                    "dice": dice(session.mask, gt), "picked": extent.picked,
                    "current": extent.current})  # fmt: skip
        if not extent.current:
            session.undo()
    return out


class RegionGrowing:
    """Classical baseline: region growing from each click with robust seed statistics.

    The image inside the growing box is denoised with a median filter (edges are kept).
    Every click grows its own region: voxels connected to the click whose intensity lies in
    ``mean ± multiplier · std``. A later positive click uses the statistics of the object so
    far (its first positive click's region) when its neighbourhood has voxels that fit them;
    otherwise, and for the other clicks, the statistics come from the click's
    ``(2·radius+1)³`` neighbourhood, and when that is clearly bimodal (the click is on an
    edge) only one side is used: the side closer to the object's intensity (positive
    clicks), farther from it (negative clicks), or, for the first click, the side of the
    clicked voxel. The statistics are then re-estimated from the grown region
    ``iterations`` times (as ITK's confidence-connected filter), and the rim the median
    filter eroded is added back where the raw intensities fit. A voxel is foreground if it
    lies in a positive click's region and is more likely under that click's intensity
    Gaussian than under those of the negative clicks whose regions also hold it (exact ties:
    the later click wins); the clicked voxels themselves take their click's label, and only
    connected components that contain a positive click are kept. Growing is limited to a box
    of ``roi_mm`` per side (the model's field of view: 128 voxels at 1.5 mm) centred like the
    model's ROI (on the bounding box of ``roi_mask``, else on the first click).

    Args:
        multiplier: Width of the intensity interval in standard deviations.
        iterations: Re-estimation rounds of the interval.
        radius: Neighbourhood radius (voxels) for the initial statistics.
        median_radius: Radius (voxels) of the median filter applied first; 0: none.
        roi_mm: Side of the growing box in mm.

    Example:
        >>> rg = RegionGrowing()
        >>> rg.set_image(read_volume("ct.nii.gz"))
        >>> rg.start_target(roi_mask=None, gt=None)
        >>> mask = rg.add_click(Click((120, 98, 40), True))
    """

    name = "region_growing"
    uses_gt = False

    def __init__(
        self,
        *,
        multiplier: float = 2.5,
        iterations: int = 2,
        radius: int = 2,
        median_radius: int = 1,
        roi_mm: float = 192.0,
    ) -> None:
        if not (multiplier > 0 and math.isfinite(multiplier)):
            raise ValueError(f"multiplier must be a positive number, got {multiplier}")
        if iterations < 0 or radius < 1:
            raise ValueError(
                f"iterations must be >= 0 and radius >= 1, got {iterations} and {radius}"
            )
        if median_radius < 0:
            raise ValueError(f"median_radius must be >= 0, got {median_radius}")
        if not roi_mm > 0:
            raise ValueError(f"roi_mm must be positive, got {roi_mm}")
        self.multiplier = float(multiplier)
        self.iterations = int(iterations)
        self.radius = int(radius)
        self.median_radius = int(median_radius)
        self.roi_mm = float(roi_mm)
        self._image: Volume | None = None
        self._clicks: list[Click] = []
        self._box: tuple[slice, ...] | None = None
        self._crop: np.ndarray | None = None  # denoised
        self._raw: np.ndarray | None = None
        self._regions: list[_Region | None] = []

    def set_image(self, image: Volume, *, modality: str | None = None) -> None:
        self._image = image
        self._clicks = []
        self._box = None
        self._crop = self._raw = None
        self._regions = []

    def start_target(
        self, *, roi_mask: np.ndarray | None = None, gt: np.ndarray | None = None
    ) -> None:
        if self._image is None:
            raise RuntimeError("call set_image() before start_target()")
        self._clicks = []
        self._regions = []
        self._box = None
        self._crop = self._raw = None
        if roi_mask is not None:
            if np.shape(roi_mask) != self._image.shape:
                raise ValueError(
                    f"roi_mask shape {np.shape(roi_mask)} != image shape {self._image.shape}"
                )
            self._place(bbox_center(roi_mask))

    def roi_contains(self, coords: np.ndarray) -> np.ndarray | None:
        """Whether native voxels ``(N, 3)`` lie in the growing box (None before it is placed)."""
        if self._box is None:
            return None
        c = np.asarray(coords)
        lo = np.array([b.start for b in self._box])
        hi = np.array([b.stop for b in self._box])
        return np.all((c >= lo) & (c < hi), axis=-1)

    def _place(self, centre: Sequence[float]) -> None:
        assert self._image is not None
        self._box = self._make_box(centre)
        crop = np.asarray(self._image.array[self._box], dtype=np.float32)
        self._raw = crop
        if self.median_radius > 0:  # edge-preserving denoising
            import SimpleITK as sitk

            image = sitk.GetImageFromArray(np.ascontiguousarray(crop.transpose(2, 1, 0)))
            image = sitk.Median(image, [self.median_radius] * 3)
            crop = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
        self._crop = np.ascontiguousarray(crop)

    def _make_box(self, centre: Sequence[float]) -> tuple[slice, ...]:
        assert self._image is not None
        box = []
        for c, n, s in zip(centre, self._image.shape, self._image.spacing, strict=True):
            half = int(math.ceil(self.roi_mm / 2 / s))
            lo = min(max(0, int(round(c)) - half), n - 1)
            hi = min(n, int(round(c)) + half)
            box.append(slice(lo, max(hi, lo + 1)))
        return tuple(box)

    def _grow(
        self,
        seed: tuple[int, int, int],
        positive: bool,
        reference: tuple[float, float] | None,
    ) -> _Region:
        """Region of one click inside the crop (robust start, iterated statistics).

        ``reference`` is the ``(mean, std)`` intensity of the object so far (its first
        positive click's region). A later positive click grows with those statistics when
        its neighbourhood has voxels that fit them ("more of this object"); otherwise, and
        for negative clicks, the neighbourhood's statistics are used, and on an edge a
        positive click takes the side closer to the object, a negative click the side
        farther from it.
        """
        import SimpleITK as sitk

        crop = self._crop
        assert crop is not None
        r = self.radius
        near = tuple(slice(max(0, v - r), v + r + 1) for v in seed)
        hood = crop[near]
        floor = 1e-6 * max(1.0, float(np.abs(crop).max()))
        k = self.multiplier
        stats: tuple[float, float] | None = None
        if positive and reference is not None:
            ref_mean, ref_std = reference
            if np.any(np.abs(hood - ref_mean) <= k * ref_std):
                stats = reference
        if stats is None:
            clusters = _split_neighbourhood(hood.ravel())
            if len(clusters) == 1:
                close = clusters[0]
            elif reference is not None:  # an edge next to the object: extend / cut it
                dist = [abs(float(c.mean()) - reference[0]) for c in clusters]
                close = clusters[int(np.argmin(dist)) if positive else int(np.argmax(dist))]
            else:  # first click on an edge: the side of the clicked voxel (its raw value is
                # noisy, its denoised value mixes both sides: the mean of the two decides)
                assert self._raw is not None
                threshold = (float(clusters[0].mean()) + float(clusters[1].mean())) / 2
                value = (float(self._raw[seed]) + float(crop[seed])) / 2
                close = clusters[1] if value >= threshold else clusters[0]
            stats = (float(close.mean()), max(float(close.std()), floor))
        mean, std = stats
        lower, upper = mean - k * std, mean + k * std
        if not lower <= crop[seed] <= upper:
            # the denoised seed lies on the other side of an edge: start from the nearest
            # neighbourhood voxel that fits the statistics (the click itself keeps its label)
            fits = np.argwhere((hood >= lower) & (hood <= upper))
            if len(fits):
                offset = np.array([sl.start for sl in near])
                local = np.array(seed) - offset
                best = fits[np.argmin(((fits - local) ** 2).sum(axis=1))]
                seed = tuple(int(v) for v in best + offset)  # type: ignore[assignment]
        image = sitk.GetImageFromArray(np.ascontiguousarray(crop.transpose(2, 1, 0)))
        region = np.zeros(crop.shape, dtype=bool)
        for _ in range(self.iterations + 1):
            lower, upper = mean - self.multiplier * std, mean + self.multiplier * std
            value = float(crop[seed])
            lower, upper = min(lower, value), max(upper, value)  # the seed is always inside
            grown = sitk.ConnectedThreshold(
                image, seedList=[[int(v) for v in seed]], lower=lower, upper=upper, replaceValue=1
            )  # ITK index order = (i, j, k) = our array order
            region = sitk.GetArrayFromImage(grown).transpose(2, 1, 0).astype(bool)
            vals = crop[region]
            mean, std = float(vals.mean()), max(float(vals.std()), floor)
        if self.median_radius > 0 and region.any():
            region = self._restore_rim(region)
        return _Region(region, mean, std)

    def _restore_rim(self, region: np.ndarray) -> np.ndarray:
        """Add back the one-voxel rim the median filter removed at corners and thin parts.

        Rim voxels join if their *raw* intensity lies within 2 raw standard deviations of
        the region's raw mean.
        """
        from scipy.ndimage import binary_dilation

        raw = self._raw
        assert raw is not None
        vals = raw[region]
        mean, std = float(vals.mean()), float(vals.std())
        rim = binary_dilation(region, iterations=self.median_radius) & ~region
        return region | (rim & (np.abs(raw - mean) <= 2.0 * std))

    def _resolve(self) -> np.ndarray:
        """Foreground of the crop: voxels claimed by the best-fitting click.

        A voxel in the regions of positive and negative clicks goes to the click whose
        intensity statistics (a Gaussian with the region's mean and std) give it the highest
        likelihood; exact ties go to the later click.
        """
        crop = self._crop
        assert crop is not None
        best = {True: np.full(crop.shape, np.inf), False: np.full(crop.shape, np.inf)}
        when = {True: np.full(crop.shape, -1), False: np.full(crop.shape, -1)}
        for n, (c, reg) in enumerate(zip(self._clicks, self._regions, strict=True)):
            if reg is None:
                continue
            z = np.full(crop.shape, np.inf)  # Gaussian negative log-likelihood
            z[reg.mask] = 0.5 * ((crop[reg.mask] - reg.mean) / reg.std) ** 2 + math.log(reg.std)
            better = z <= best[c.positive]
            best[c.positive] = np.where(better, z, best[c.positive])
            when[c.positive] = np.where(better & np.isfinite(z), n, when[c.positive])
        zp, zn = best[True], best[False]
        return np.isfinite(zp) & ((zp < zn) | ((zp == zn) & (when[True] > when[False])))

    def add_click(self, click: Click) -> np.ndarray:
        if self._image is None:
            raise RuntimeError("call set_image() before add_click()")
        shape = self._image.shape
        if not all(0 <= c < n for c, n in zip(click.coord, shape, strict=True)):
            raise ValueError(f"click {click.coord} lies outside the image of shape {shape}")
        if self._box is None:
            self._place(click.coord)
        box = self._box
        assert box is not None
        inside = all(b.start <= v < b.stop for v, b in zip(click.coord, box, strict=True))
        local = tuple(int(v) - b.start for v, b in zip(click.coord, box, strict=True))
        reference = next(
            (
                (r.mean, r.std)
                for c, r in zip(self._clicks, self._regions, strict=True)
                if c.positive and r
            ),
            None,
        )
        self._clicks.append(click)
        self._regions.append(
            self._grow(local, click.positive, reference) if inside else None  # type: ignore[arg-type]
        )

        out = np.zeros(shape, dtype=bool)
        fg = self._resolve()
        seeds = []
        for c in self._clicks:  # clicked voxels themselves, the latest click wins
            loc = tuple(v - b.start for v, b in zip(c.coord, box, strict=True))
            if all(0 <= v < n for v, n in zip(loc, fg.shape, strict=True)):
                fg[loc] = c.positive
                if c.positive:
                    seeds.append(loc)
        seeds = [s for s in seeds if fg[s]]
        if not seeds:
            return out
        out[box] = _components_containing(fg, seeds)
        return out


@dataclass(frozen=True)
class _Region:
    """A click's grown region (crop-sized bool mask) and its intensity statistics."""

    mask: np.ndarray
    mean: float
    std: float


def _split_neighbourhood(values: np.ndarray, separation: float = 4.0) -> list[np.ndarray]:
    """The neighbourhood's intensity clusters: two if it is clearly bimodal, else one.

    Bimodal means an Otsu split whose class means differ by more than ``separation`` pooled
    standard deviations (the click is near an edge).
    """
    v = np.sort(values.astype(np.float64))
    n = v.size
    if n < 4:
        return [v]
    k = np.arange(1, n)  # split after k values
    csum = np.cumsum(v)[:-1]
    csq = np.cumsum(v * v)[:-1]
    mu_lo, mu_hi = csum / k, (v.sum() - csum) / (n - k)
    between = k * (n - k) * (mu_hi - mu_lo) ** 2
    best = int(np.argmax(between))
    split = best + 1
    var_lo = csq[best] / split - mu_lo[best] ** 2
    var_hi = (np.sum(v * v) - csq[best]) / (n - split) - mu_hi[best] ** 2
    pooled = math.sqrt(max((split * var_lo + (n - split) * var_hi) / n, 0.0))
    if mu_hi[best] - mu_lo[best] <= separation * pooled:
        return [v]
    return [v[:split], v[split:]]


def _components_containing(mask: np.ndarray, seeds: Sequence[tuple]) -> np.ndarray:
    """The connected components (26-connectivity) of ``mask`` that contain a seed."""
    import cc3d

    labels = cc3d.connected_components(mask.astype(np.uint8), connectivity=26)
    keep = {int(labels[s]) for s in seeds} - {0}
    return np.isin(labels, sorted(keep)) if keep else np.zeros_like(mask)


__all__ = ["ClickMethod", "ModelMethod", "RegionGrowing"]
