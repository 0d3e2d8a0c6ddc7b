"""Native-space prediction: volume + clicks in native voxel indices -> mask on the input grid.

:class:`SamMed3DPredictor` runs the published inference (docs/faithfulness.md §5) without a
ground-truth mask and without resampling the whole image:

1. ``set_image``: keep the native volume and compute the geometry of its canonical 1.5 mm
   lattice (``Resample(1.5)`` + ``ToCanonical``), without materialising it.
2. Choose a ROI: centred on the first positive click (or a box, or a mask's bounding box,
   with torchio's ``CropOrPad`` centring).
3. Resample only that ROI from the native image (one SimpleITK call on the native block
   under it), CT clamp if the modality is CT, zero outside the lattice (the published zero
   padding), z-score over voxels > 0. The image embedding is cached per ROI, so a
   refinement click only runs the prompt encoder and the mask decoder.
4. Prompt in ROI tensor-axis order (:mod:`sammed3d.inference.geometry`) with a mask prompt
   that is always given (zeros at the first click, then the previous low-res logits),
   upsample trilinearly, threshold logits > 0 and paste back with nearest neighbour onto the
   native voxels under the ROI (0 elsewhere).
5. Optionally extend through ROI faces the mask touches (:mod:`sammed3d.inference.extend`).

The per-click contract (what :class:`~sammed3d.InteractiveSession`, the server and the
evaluation use; nothing private): :meth:`SamMed3DPredictor.require_image`,
:meth:`~SamMed3DPredictor.click_voxels` (the one place a click is rounded to a voxel and
checked to lie in the image), :meth:`~SamMed3DPredictor.check_roi`,
:meth:`~SamMed3DPredictor.roi_at`, :meth:`~SamMed3DPredictor.predict_tile`,
:meth:`~SamMed3DPredictor.extend_tile` and :meth:`~SamMed3DPredictor.native_block`.

Example:
    >>> predictor = SamMed3DPredictor.from_checkpoint("sam_med3d_turbo.pth")
    >>> predictor.set_image("ct.nii.gz", modality="CT")
    >>> pred = predictor.predict([[250, 261, 140]], [1])      # native (i, j, k)
    >>> pred.mask.shape == predictor.volume.shape
    True
    >>> pred = predictor.predict(
    ...     [[262, 255, 141]], [0], mask_input=pred.low_res_logits, roi=pred.roi)
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sammed3d.config import (
    check_click_bounds,
    check_contrast_guard,
    check_first_pick,
    check_later_check,
    check_refine_boundary,
    check_rim_edit,
)
from sammed3d.data.dataset_json import check_modality
from sammed3d.data.transforms import (
    DEFAULT_SPACING,
    bbox_center,
    bbox_slices,
    ct_clamp,
    zscore_foreground,
)
from sammed3d.inference import extend as _extend
from sammed3d.inference.extend import Tile
from sammed3d.inference.geometry import CLICK_DECIMALS, Lattice, RoiGrid, nearest_index
from sammed3d.inference.refine import refine_boundary
from sammed3d.inference.validation import check_image_array, load_image
from sammed3d.inference.zoom import ZOOM_FILL, resample_roi_logits, zoom_roi
from sammed3d.io import IrregularSlices, Volume, VolumeError
from sammed3d.modeling.sam3d import ImageEmbedding, select_first_click_mask, stability_score

logger = logging.getLogger(__name__)

#: First clicks whose multimask outputs are kept for :meth:`SamMed3DPredictor.first_click_extents`
#: (the click's own ROI and its zoomed ROI, for the current object and one before it).
FIRST_DECODES_KEPT = 4


@dataclass(frozen=True, eq=False)
class Prediction:
    """Result of :meth:`SamMed3DPredictor.predict`.

    Args:
        mask: ``(I, J, K)`` bool on the native grid of the image.
        low_res_logits: ``(1, 1, l, l, l)`` raw logits of ``roi``; pass them back as
            ``mask_input`` (with ``roi=``) for the next click.
        roi: The ROI the points were given to.
        tiles: Every ROI prediction that made the mask (``roi``'s first; more than one
            when the object was extended beyond the ROI).
        logits: ``(1, 1, S, S, S)`` upsampled logits of ``roi`` (``return_logits=True``).
    """

    mask: np.ndarray
    low_res_logits: torch.Tensor
    roi: RoiGrid
    tiles: tuple[Tile, ...]
    logits: torch.Tensor | None = None


def normalise_modality(modality: str | None) -> str | None:
    """Canonical modality code (``"CT"``, ``"MR"``, ...) of a user value or file header, or None.

    Names the dataset reader knows map as there
    (:func:`sammed3d.data.dataset_json.normalise_modality`: ``"T1"``, ``"MRI"``, ``"FLAIR"`` ->
    ``"MR"``, ...); other codes come back upper-case (``"NM"``); MetaImage's ``MET_MOD_``
    prefix is dropped.

    Raises:
        ValueError: not a non-empty string.
    """
    from sammed3d.data.dataset_json import normalise_modality as canonical_modality

    if modality is None:
        return None
    if not isinstance(modality, str) or not modality.strip():
        raise ValueError(
            f"modality must be a non-empty string such as 'CT' or 'MR', got {modality!r}"
        )
    value = modality.strip().upper()
    if value.startswith("MET_MOD_"):  # MetaImage header values
        value = value[len("MET_MOD_") :]
    known = canonical_modality(value)
    return value if known == "unknown" else known


def read_modality(path: str | os.PathLike[str]) -> str | None:
    """The modality recorded in a file's metadata (DICOM ``0008|0060``, MetaImage ``Modality``).

    Never guessed from the path; None when the format has no such field (NIfTI, NRRD).
    """
    import SimpleITK as sitk

    path = Path(path)
    target = path
    if path.is_dir():
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path))
        if not files:
            return None
        target = Path(files[0])
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(target))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    for key in ("0008|0060", "Modality"):
        if reader.HasMetaDataKey(key):
            value = normalise_modality(reader.GetMetaData(key).strip() or None)
            if value not in (None, "UNKNOWN"):  # MetaImage writes MET_MOD_UNKNOWN by default
                return value
    return None


def _warn_if_not_hounsfield(volume: Volume) -> None:
    """Warn when an image said to be CT has no value below 0: a CT of a body holds air and fat
    (below 0 HU), an MR image rarely does, and the CT clamp to [-1000, 1000] then silently
    changes what the model sees (``--modality CT`` given to an MR image)."""
    lowest = float(np.min(volume.array))
    if lowest >= 0:
        logger.warning(
            "warning: the image is treated as CT (intensities clamped to [-1000, 1000] HU) "
            "but has no value below 0 (lowest %g): if it is not a CT in Hounsfield units, "
            "give its modality (e.g. --modality MR; modality='MR' in Python)",
            lowest,
        )


class SamMed3DPredictor:
    """Promptable segmentation of a 3-D image in its own (native) voxel space.

    Args:
        model: A :class:`~sammed3d.Sam3D` (or any object with the same ``encode``,
            ``decode``, ``upsample_logits``, ``img_size`` and ``low_res_size``).
        target_spacing: Lattice spacing in mm (published: 1.5 isotropic).
        roi_size: ROI side in voxels; must equal ``model.img_size`` (the default).
        modality: Default modality (``"CT"`` enables the [-1000, 1000] clamp); a
            ``set_image(modality=)`` or the file's metadata override it.
        device: Where to run the model (default: where the model is).
        extend: Grow beyond the ROI when the mask touches an inner ROI face (default on).
        max_rois: Bound on the ROIs of one prediction, extension included.
        min_face_voxels: Mask voxels on a face needed to extend through it.
        cache_size: Image embeddings kept (one per ROI; for a model with a hi-res path each
            also keeps the similarity maps of up to 16 clicked cells, 1 MB each at 64^3).
        zoom_spacing: Zoom-in at an object's first click (:mod:`sammed3d.inference.zoom`):
            the spacing in mm of the finer ROI a small first mask is predicted again in; 0
            turns it off, None (default) takes the checkpoint's ``zoom_spacing`` (0 for the
            published models; off when not finer than ``target_spacing``). A value given
            here must be finer than ``target_spacing`` (ValueError otherwise).
        zoom_fill: Largest share of the zoomed ROI's side a first mask's bounding box may
            span to be zoomed into.
        fine_zoom_spacing: A second, finer zoom lattice (mm) whose masks for a first click
            are offered among its extents (:meth:`first_click_extents`), so that a
            first-click rule (the edge pick) can take them; the object then lives on that
            lattice as on the zoom lattice. 0 turns it off, None (default) takes the
            checkpoint's ``fine_zoom_spacing`` (0 for the published models; off without
            zoom-in or when not finer than ``zoom_spacing``). A value given here must be
            finer than ``zoom_spacing`` (ValueError otherwise, and with zoom-in off).
        refine_boundary: Boundary refinement (:mod:`sammed3d.inference.refine`): the
            half-width in mm of the band along a mask's boundary decided again by intensity,
            at most ``MAX_REFINE_BOUNDARY_MM`` (10) and rounded to whole voxels of the ROI's
            lattice (at least one); 0 turns it off, None (default) takes the checkpoint's
            ``refine_boundary`` (0 for the published models).
        contrast_guard: The contrast guard (:mod:`sammed3d.inference.contrast`, applied by
            :class:`~sammed3d.InteractiveSession`): a first-click pick whose border contrast
            is below this gives way to the extent with the highest contrast (if at least
            twice as high), and a later click's mask that is more than twice as large as
            before, with a contrast below this and below half the previous one, is not
            taken; 0 turns it off, None (default) takes the checkpoint's ``contrast_guard``
            (0 for the published models); at most ``MAX_CONTRAST_GUARD`` (10).
        first_pick: Which extent an object's first click gets (applied by
            :class:`~sammed3d.InteractiveSession`, models trained with
            ``first_click_multimask`` only): ``"model"``, the model's ranking, or
            ``"edges"``, the extent whose border follows the strongest intensity edge
            (:func:`sammed3d.inference.contrast.edge_pick`; the contrast guard then acts on
            later clicks only); None (default) takes the checkpoint's ``first_pick``
            (``"model"`` for the published models).
        later_check: ``"edges"``: the edge check (applied by
            :class:`~sammed3d.InteractiveSession`): a later click whose mask's edge score
            falls well below the previous mask's is refused
            (:func:`sammed3d.inference.contrast.later_click_refused`); ``"none"``: every
            click's mask is taken; None (default) takes the checkpoint's ``later_check``
            (``"none"`` for the bundled and the published models).
        rim_edit: The rim edit (applied by :class:`~sammed3d.InteractiveSession`, see
            :meth:`rim_edit_tile`): the radius in mm around a positive later click that
            touches a small (zoomed-in) object's mask within which its new logits may
            change the object; 0 turns it off, None (default) takes the checkpoint's
            ``rim_edit`` (0 for the published models); at most ``MAX_RIM_EDIT_MM`` (10).
        click_bounds: Click bounds (applied by :class:`~sammed3d.InteractiveSession`,
            :mod:`sammed3d.inference.bounds`): ``"negative"``, a negative later click never
            adds voxels to the object's mask; ``"both"``, nor does a positive one remove
            any; ``"none"``, off; None (default) takes the checkpoint's ``click_bounds``
            (``"none"`` for the published models).

    Raises:
        ValueError: bad ``target_spacing``, ``roi_size``, ``max_rois``, ``cache_size``,
            ``zoom_spacing``, ``zoom_fill``, ``refine_boundary``, ``contrast_guard``,
            ``first_pick``, ``later_check``, ``rim_edit``, ``click_bounds`` or ``modality``
            (:func:`check_modality`);
            :class:`~sammed3d.devices.DeviceError` (a ``ValueError``) for a device this
            installation cannot use.

    **Per-click contract.** A click travels :meth:`click_voxels` (its native voxel: rounded
    once and checked once) -> a ROI (a ROI the object has, or a new one centred on the voxel:
    ``lattice.roi_at(voxel, roi_size)``; :meth:`roi_at` does the same for unchecked points
    and :meth:`check_roi` checks ROIs from elsewhere) -> :meth:`predict_tile` (the model on
    that ROI, prompts in ROI voxels) -> :meth:`extend_tile` (neighbouring ROIs where the mask
    reaches a ROI face) -> :meth:`native_block` (the stitched mask on the native grid).
    :meth:`require_image` raises ``RuntimeError`` before ``set_image``.
    :class:`~sammed3d.InteractiveSession` uses only these; :meth:`predict` runs the same chain
    for all points at once.
    """

    def __init__(
        self,
        model: Any,
        *,
        target_spacing: Sequence[float] = DEFAULT_SPACING,
        roi_size: int | None = None,
        modality: str | None = None,
        device: str | torch.device | None = None,
        extend: bool = True,
        max_rois: int = 8,
        min_face_voxels: int = 8,
        cache_size: int = 16,
        zoom_spacing: float | None = None,
        zoom_fill: float = ZOOM_FILL,
        fine_zoom_spacing: float | None = None,
        refine_boundary: float | None = None,
        contrast_guard: float | None = None,
        first_pick: str | None = None,
        later_check: str | None = None,
        rim_edit: float | None = None,
        click_bounds: str | None = None,
    ) -> None:
        spacing = tuple(float(s) for s in target_spacing)
        if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(f"target_spacing must be three positive numbers, got {target_spacing}")
        img_size = int(model.img_size)
        if roi_size is not None and int(roi_size) != img_size:
            raise ValueError(
                f"roi_size={roi_size} does not match the model input size {img_size} (the "
                "released models have a fixed-size position embedding)"
            )
        if max_rois < 1:
            raise ValueError(f"max_rois must be >= 1, got {max_rois}")
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        zoom_spacing = _finer_spacing(
            "zoom_spacing", zoom_spacing, model, min(spacing), f"the {min(spacing):g} mm lattice"
        )
        if not 0 < zoom_fill <= 1:
            raise ValueError(f"zoom_fill must be in (0, 1], got {zoom_fill}")
        if fine_zoom_spacing is not None and fine_zoom_spacing > 0 and not zoom_spacing:
            raise ValueError(
                f"fine_zoom_spacing {fine_zoom_spacing:g} needs zoom-in, which is off "
                "(zoom_spacing 0)"
            )
        fine_zoom_spacing = _finer_spacing(
            "fine_zoom_spacing",
            fine_zoom_spacing,
            model,
            zoom_spacing,
            f"zoom_spacing = {zoom_spacing:g} mm",
        )
        config = getattr(model, "config", None)

        def setting(value: Any, name: str, off: Any) -> Any:
            """``value``, or (None) the checkpoint's setting ``name`` (``off`` without one)."""
            return (getattr(config, name, None) or off) if value is None else value

        refine_boundary = check_refine_boundary(setting(refine_boundary, "refine_boundary", 0.0))
        contrast_guard = check_contrast_guard(setting(contrast_guard, "contrast_guard", 0.0))
        first_pick = check_first_pick(setting(first_pick, "first_pick", "model"))
        later_check = check_later_check(setting(later_check, "later_check", "none"))
        rim_edit = check_rim_edit(setting(rim_edit, "rim_edit", 0.0))
        click_bounds = check_click_bounds(setting(click_bounds, "click_bounds", "none"))
        if device is not None:
            from sammed3d.build import resolve_model_device

            device = resolve_model_device(device)
            model = model.to(device)
        self.model = model.eval() if hasattr(model, "eval") else model
        self.device = device if device is not None else _model_device(model)
        self.target_spacing: tuple[float, float, float] = spacing  # type: ignore[assignment]
        self.roi_size = img_size
        self.default_modality = check_modality(modality)
        self.extend = bool(extend)
        self.max_rois = int(max_rois)
        self.min_face_voxels = int(min_face_voxels)
        self.cache_size = int(cache_size)
        #: Spacing (mm) of the zoomed ROI of a small object's first click; 0: no zoom.
        self.zoom_spacing = zoom_spacing
        #: A first mask is zoomed into when its bounding box fills at most this share of the
        #: zoomed ROI's side.
        self.zoom_fill = float(zoom_fill)
        #: Spacing (mm) of the second zoom lattice whose first-click masks are offered among
        #: the extents; 0: none.
        self.fine_zoom_spacing = fine_zoom_spacing
        #: Half-width (mm) of the boundary band decided again by intensity; 0: off.
        self.refine_boundary = refine_boundary
        #: Border contrast below which a first-click pick gives way to a sharper extent and a
        #: later click's blown-up mask is not taken (:mod:`sammed3d.inference.contrast`); 0: off.
        self.contrast_guard = contrast_guard
        #: Which extent a first click gets: "model" (its ranking) or "edges" (the edge pick).
        self.first_pick = first_pick
        #: Whether a later click's mask must keep its edges: "none" or "edges" (the edge check).
        self.later_check = later_check
        #: Radius (mm) of a small object's rim edit (:meth:`rim_edit_tile`); 0: off.
        self.rim_edit = rim_edit
        #: Which later clicks are bounded by the mask before them: "none", "negative", "both".
        self.click_bounds = click_bounds
        self._volume: Volume | None = None
        self._lattice: Lattice | None = None
        self._zoom_lattice: Lattice | None = None
        self._fine_lattice: Lattice | None = None
        self._modality: str | None = None
        self._embeddings: OrderedDict[tuple, ImageEmbedding] = OrderedDict()
        # raw ROI intensities (boundary refinement), keyed and bounded like the embeddings
        self._intensities: OrderedDict[tuple, np.ndarray] = OrderedDict()
        # the multimask outputs of recent first clicks (a first click decodes them to keep
        # one; first_click_extents lists them all): a few entries, keyed by ROI and prompts
        self._first_decodes: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str] | None = None,
        device: str | torch.device = "cpu",
        *,
        allow_unsafe_pickle: bool = False,
        **kwargs: Any,
    ) -> SamMed3DPredictor:
        """Load weights (architecture from the file) and wrap them.

        Args:
            path: Checkpoint file or published name (``turbo``, ...); None: the default
                checkpoint (:func:`sammed3d.paths.require_checkpoint` resolves it, once, in
                :func:`sammed3d.build.read_checkpoint`). :attr:`checkpoint` tells which file.
            device: Where to run: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``
                (:func:`sammed3d.build.resolve_model_device`).
            allow_unsafe_pickle: See :func:`sammed3d.load_checkpoint`.
            **kwargs: Passed to the constructor.

        Raises:
            FileNotFoundError: no such file nor name, or no default checkpoint.
            CheckpointError: not a usable SAM-Med3D checkpoint.
            DeviceError: a device this installation cannot use.
        """
        from sammed3d.build import load_checkpoint, resolve_model_device

        where = resolve_model_device(device)
        model = load_checkpoint(path, device=where, allow_unsafe_pickle=allow_unsafe_pickle)
        return cls(model, device=where, **kwargs)

    @property
    def checkpoint(self) -> Path | None:
        """The checkpoint file the model was loaded from (None for a model built in memory)."""
        path = getattr(self.model, "checkpoint_path", None)
        return Path(path) if path is not None else None

    # ------------------------------------------------------------------------------------
    # image

    def set_image(
        self,
        image: Volume | np.ndarray | torch.Tensor | str | os.PathLike[str],
        *,
        spacing: Sequence[float] | None = None,
        affine: np.ndarray | None = None,
        modality: str | None = None,
        allow_label_like: bool = False,
        irregular_slices: IrregularSlices = "error",
    ) -> None:
        """Set the image to segment (drops cached embeddings).

        A path is read and checked once here (:func:`~sammed3d.inference.validation.load_image`);
        arrays and volumes get the same voxel checks (:func:`check_image_array`).

        Args:
            image: A :class:`~sammed3d.io.Volume`, a path (NIfTI, NRRD, MHA/MHD or a DICOM
                folder), or an ``(I, J, K)`` array in native index order with ``spacing``
                (identity direction, zero origin) or a RAS ``affine``.
            spacing: Voxel size per axis in mm, for arrays.
            affine: ``4 x 4`` voxel -> RAS+ mm (nibabel), for arrays.
            modality: ``"CT"`` enables the [-1000, 1000] clamp. Default: the constructor's
                value, else the file's metadata, else none (no clamp).
            allow_label_like: Accept images with only a few distinct values.
            irregular_slices: A path to a DICOM series with uneven slice gaps: ``"error"``
                (refuse) or ``"resample"`` (see :func:`sammed3d.io.read_volume`).

        Raises:
            FileNotFoundError: missing path.
            VolumeError: unreadable file, not 3-D, NaN/Inf, constant, label-like image; not an
                image at all (a list, None, ...).
            ValueError: bad spacing/affine arguments; a modality that is not a known one
                (:func:`check_modality`).
        """
        t0 = time.perf_counter()
        modality = check_modality(modality)  # a typo fails before the image is read
        meta_modality = None
        if isinstance(image, str | os.PathLike):
            if spacing is not None or affine is not None:
                raise ValueError(
                    "spacing/affine are read from the file; do not pass them with a path"
                )
            volume = load_image(
                image, allow_label_like=allow_label_like, irregular_slices=irregular_slices
            )
            meta_modality = read_modality(image)
        elif isinstance(image, Volume):
            if spacing is not None or affine is not None:
                raise ValueError("a Volume carries its geometry; do not pass spacing/affine")
            volume = image
        elif isinstance(image, np.ndarray | torch.Tensor):
            array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else image
            if array.ndim != 3:
                raise VolumeError(f"image: expected a 3-D (I, J, K) array, got shape {array.shape}")
            if affine is not None and spacing is not None:
                raise ValueError("give either spacing or affine, not both")
            if affine is not None:
                volume = Volume.from_affine(array, affine)
            elif spacing is not None:
                volume = Volume(array, tuple(spacing))  # type: ignore[arg-type]
            else:
                raise ValueError(
                    "an array needs its geometry: pass spacing=(si, sj, sk) in mm or a RAS affine="
                )
        else:
            from sammed3d._wording import kind_of

            raise VolumeError(
                "image: expected a 3-D numpy array or torch tensor (with spacing= or affine=), "
                "a sammed3d.io.Volume, or the path of an image file or DICOM folder, got "
                f"{kind_of(image)}"
            )
        if not isinstance(image, str | os.PathLike):  # load_image checked files already
            check_image_array(volume.array, allow_label_like=allow_label_like)
        self.reset_image()
        self._volume = volume
        self._lattice = Lattice.from_native(volume, self.target_spacing)
        if self.zoom_spacing:
            self._zoom_lattice = Lattice.from_native(volume, (self.zoom_spacing,) * 3)
        if self.fine_zoom_spacing:
            self._fine_lattice = Lattice.from_native(volume, (self.fine_zoom_spacing,) * 3)
        self._modality = (
            modality if modality is not None else (self.default_modality or meta_modality)
        )
        if self._modality == "CT":
            _warn_if_not_hounsfield(volume)
        logger.debug(
            "image %s, lattice %s, modality %s (%.3f s)",
            volume,
            self._lattice.shape,
            self._modality,
            time.perf_counter() - t0,
        )

    def reset_image(self) -> None:
        """Forget the image and every cached embedding."""
        self._volume = None
        self._lattice = None
        self._zoom_lattice = None
        self._fine_lattice = None
        self._modality = None
        self._embeddings.clear()
        self._intensities.clear()
        self._first_decodes.clear()

    @property
    def is_image_set(self) -> bool:
        return self._volume is not None

    @property
    def volume(self) -> Volume:
        """The native image (RuntimeError if none is set)."""
        return self.require_image()

    @property
    def lattice(self) -> Lattice:
        """The canonical lattice of the image (RuntimeError if none is set)."""
        return self._image()[1]

    @property
    def modality(self) -> str | None:
        """Modality in use for the current image (``"CT"`` clamps)."""
        return self._modality

    def require_image(self) -> Volume:
        """The native image.

        Raises:
            RuntimeError: no image was set (``set_image``).
        """
        return self._image()[0]

    def _image(self) -> tuple[Volume, Lattice]:
        if self._volume is None or self._lattice is None:
            raise RuntimeError("An image must be set with .set_image(...) before prediction.")
        return self._volume, self._lattice

    # ------------------------------------------------------------------------------------
    # clicks

    def click_voxels(
        self, points: np.ndarray | Sequence[float] | Sequence[Sequence[float]]
    ) -> np.ndarray:
        """Native voxels of clicks: the one place a click is rounded and checked.

        A click is a voxel. Continuous (fractional) indices are accepted and rounded here, once,
        to the nearest voxel with ties rounded up (ITK's nearest-neighbour rule: 2.5 -> 3,
        -0.5 -> 0; values are snapped to 1e-4 voxel first, so that a tie reached from
        millimetres through a float32 spacing stays a tie,
        :func:`~sammed3d.inference.geometry.nearest_index`). Everything downstream (ROI
        placement, prompts, the session's history) uses the returned voxel.

        Args:
            points: ``(3,)`` or ``(N, 3)`` native indices ``(i, j, k)`` (the array order of
                :class:`~sammed3d.io.Volume`; ITK-SNAP, 3D Slicer "IJK", nibabel).

        Returns:
            ``(N, 3)`` int64 native voxel indices.

        Raises:
            RuntimeError: no image set.
            ValueError: not numbers of shape ``(3,)``/``(N, 3)``, not finite, or a voxel outside
                the image (one line naming the click, 1-based when several are given, and the
                valid index ranges).
        """
        volume = self.require_image()
        try:
            pts = np.asarray(points, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                f"points must be numbers: (N, 3) native voxel indices (i, j, k), got {points!r}"
            ) from None
        if pts.shape == (3,):
            pts = pts[None]
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(
                f"points must be (N, 3) native voxel indices (i, j, k), got shape {pts.shape}"
            )
        if not np.isfinite(pts).all():
            raise ValueError("points must be finite numbers")
        voxels = nearest_index(pts, CLICK_DECIMALS)
        last = np.asarray(volume.shape) - 1
        bad = np.flatnonzero(np.any((voxels < 0) | (voxels > last), axis=1))
        if bad.size:
            n = int(bad[0])
            which = f"click {n + 1}" if len(pts) > 1 else "click"
            shown = ", ".join(f"{v:g}" for v in pts[n])
            raise ValueError(
                f"{which} at native voxel index ({shown}) is outside the image: native voxel "
                f"indices (i, j, k) must lie in [0, {last[0]}] x [0, {last[1]}] x [0, {last[2]}]"
            )
        return voxels.astype(np.int64)

    # ------------------------------------------------------------------------------------
    # ROIs

    def roi_at(self, ijk: Sequence[float]) -> RoiGrid:
        """The ROI centred on a native point (the published centring of a 1-voxel mask).

        Args:
            ijk: Native ``(i, j, k)``; continuous values are kept (the centre maps to its
                nearest lattice voxel, :meth:`Lattice.roi_at`), so a bounding-box centre
                such as ``(10.5, 20, 7.5)`` centres the ROI as the published pipeline does.

        Raises:
            RuntimeError: no image set.
            ValueError: malformed, or its nearest voxel is outside the image
                (:meth:`click_voxels`).
        """
        self.click_voxels(ijk)
        return self.lattice.roi_at(ijk, self.roi_size)

    def roi_from_box(self, lo: Sequence[float], hi: Sequence[float]) -> RoiGrid:
        """The ROI centred on a native box ``[lo, hi]`` (inclusive voxel indices)."""
        lo_a = np.asarray(lo, dtype=np.float64)
        hi_a = np.asarray(hi, dtype=np.float64)
        if lo_a.shape != (3,) or hi_a.shape != (3,) or np.any(hi_a < lo_a):
            raise ValueError(f"box needs lo <= hi, three indices each; got {lo} and {hi}")
        corners = np.array(
            [
                [a, b, c]
                for a in (lo_a[0], hi_a[0])
                for b in (lo_a[1], hi_a[1])
                for c in (lo_a[2], hi_a[2])
            ]
        )
        u = self.lattice.native_to_lattice(corners)
        lo_u = nearest_index(u.min(axis=0))
        hi_u = nearest_index(u.max(axis=0))
        return self.lattice.roi_around((lo_u + hi_u) / 2, self.roi_size)

    def roi_from_mask(self, mask: np.ndarray) -> RoiGrid:
        """The ROI of the published evaluation: centred on a mask's bounding box.

        The mask is resampled (nearest) onto the lattice, as ``tio.Resample`` does to the
        label, and the crop is centred on its bounding box with ``CropOrPad``'s rule. Only
        the lattice block under the mask's native bounding box is resampled.

        Raises:
            ValueError: wrong shape or an empty mask (also empty after resampling).
        """
        volume, lattice = self._image()
        mask = np.asarray(mask)
        if mask.shape != volume.shape:
            raise ValueError(f"mask shape {mask.shape} != image shape {volume.shape}")
        nz = np.argwhere(np.any(mask != 0, axis=2))
        if nz.size == 0:
            raise ValueError("cannot centre a ROI on an empty mask")
        ks = np.flatnonzero(np.any(mask != 0, axis=(0, 1)))
        lo = np.array([nz[:, 0].min(), nz[:, 1].min(), ks[0]], dtype=np.float64)
        hi = np.array([nz[:, 0].max(), nz[:, 1].max(), ks[-1]], dtype=np.float64)
        corners = np.array(
            [[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])]
        )
        u = lattice.native_to_lattice(corners)
        start = np.floor(u.min(axis=0)) - 1
        stop = np.ceil(u.max(axis=0)) + 2
        block = lattice.roi(start.astype(int).tolist(), (stop - start).astype(int).tolist())
        on_lattice = block.resample_from_native((mask != 0).astype(np.uint8), "nearest")
        if not on_lattice.any():
            raise ValueError("the mask vanishes when resampled to the lattice (too small)")
        center = np.asarray(bbox_center(on_lattice)) + np.asarray(block.start)
        return lattice.roi_around(center, self.roi_size)

    # ------------------------------------------------------------------------------------
    # model space

    def roi_image(self, roi: RoiGrid) -> torch.Tensor:
        """The normalised model input of ``roi``: ``(1, 1, S, S, S)`` float32 on the device.

        Raises:
            ValueError: z-score undefined (no voxel > 0 in the ROI, or all equal).
        """
        array = self.roi_intensity(roi)
        try:
            array = zscore_foreground(array)
        except ValueError as exc:
            center = np.round(roi.roi_to_native(np.asarray(roi.size) / 2 - 0.5)).astype(int)
            hint = (
                " (the model's input is z-scored over the voxels > 0, as in SAM-Med3D: the "
                "structures must have positive intensities; add a constant to an image shifted "
                "below 0)"
                if not np.any(array > 0)
                else ""
            )
            raise ValueError(
                f"cannot normalise the model's ROI centred at native voxel "
                f"{tuple(center.tolist())}: {exc}{hint}"
            ) from None
        return torch.from_numpy(np.ascontiguousarray(array))[None, None].to(self.device)

    def roi_intensity(self, roi: RoiGrid) -> np.ndarray:
        """The image on ``roi`` before normalisation: ``(S, S, S)`` float32, linear
        interpolation, 0 outside the lattice (the published ``CropOrPad``), CT clamped.

        With boundary refinement on, kept beside the ROI's embedding (same cache bound).
        """
        volume, _ = self._image()
        self.check_roi(roi)
        key = (self.lattice_level(roi.lattice), *roi.key)
        if key in self._intensities:
            self._intensities.move_to_end(key)
            return self._intensities[key]
        array = roi.resample_from_native(volume.array, "linear", zero_outside_lattice=True)
        if self._modality == "CT":
            array = ct_clamp(array)  # 0 stays 0
        if self.refine_boundary:
            array.flags.writeable = False  # shared by every later refinement of this ROI
            self._intensities[key] = array
            while len(self._intensities) > self.cache_size:
                self._intensities.popitem(last=False)
        return array

    def get_image_embedding(self, roi: RoiGrid) -> ImageEmbedding:
        """Image embedding of ``roi`` (:meth:`Sam3D.encode`; computed once, then cached)."""
        self.check_roi(roi)
        key = (self.lattice_level(roi.lattice), *roi.key)
        if key in self._embeddings:
            self._embeddings.move_to_end(key)
            return self._embeddings[key]
        t0 = time.perf_counter()
        x = self.roi_image(roi)
        t1 = time.perf_counter()
        with torch.inference_mode():
            emb = self.model.encode(x)
        logger.debug(
            "ROI %s: resample+normalise %.3f s, encoder %.3f s",
            roi,
            t1 - t0,
            time.perf_counter() - t1,
        )
        self._embeddings[key] = emb
        while len(self._embeddings) > self.cache_size:
            self._embeddings.popitem(last=False)
        return emb

    def predict_torch(
        self,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor | None = None,
        *,
        roi: RoiGrid,
        multimask_output: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Model-space prediction in one ROI (batched prompts, one image).

        Args:
            point_coords: ``(B, N, 3)`` ROI voxel coordinates in tensor-axis order
                ``(r0, r1, r2)``.
            point_labels: ``(B, N)``: 1 positive, 0 negative.
            mask_input: ``(B, 1, l, l, l)`` previous low-res logits; None means zeros (the
                published first-click prompt) and, for a model trained with
                ``first_click_multimask``, decoding the multimask outputs and keeping the one
                with the highest predicted IoU x stability score
                (:func:`~sammed3d.modeling.sam3d.select_first_click_mask`).
            roi: The ROI (its embedding is computed or taken from the cache).
            multimask_output: Return masks 1..3 instead of mask 0 (never trained in the
                published models).

        Returns:
            ``(low_res_logits (B, C, l, l, l), iou (B, C))``: ``C`` is 3 with
            ``multimask_output``, else 1.
        """
        if point_coords.ndim != 3 or point_coords.shape[-1] != 3:
            raise ValueError(f"point_coords must be (B, N, 3), got {tuple(point_coords.shape)}")
        if point_labels.shape != point_coords.shape[:2]:
            raise ValueError(
                f"point_labels must be (B, N) = {tuple(point_coords.shape[:2])}, "
                f"got {tuple(point_labels.shape)}"
            )
        batch = point_coords.shape[0]
        low_size = tuple(int(s) for s in self.model.low_res_size)
        first_click = mask_input is None and not multimask_output
        pick_best = first_click and bool(getattr(self.model, "first_click_multimask", False))
        if mask_input is None:
            mask_input = torch.zeros((batch, 1, *low_size), device=self.device)
        elif tuple(mask_input.shape) != (batch, 1, *low_size):
            raise ValueError(
                f"mask_input must be (B, 1, {', '.join(map(str, low_size))}) logits, "
                f"got {tuple(mask_input.shape)}"
            )
        emb = self.get_image_embedding(roi)  # batch 1: the decoder broadcasts it
        coords = point_coords.to(self.device, torch.float32)
        labs = point_labels.to(self.device, torch.int64)
        key = None
        if pick_best or (multimask_output and not bool(mask_input.any())):
            # a first click's multimask outputs, decoded once for its pick and its extents
            key = (
                self.lattice_level(roi.lattice),
                *roi.key,
                tuple(coords.cpu().reshape(-1).tolist()),
                tuple(labs.cpu().reshape(-1).tolist()),
            )
        cached = self._first_decodes.get(key) if key is not None else None
        if cached is not None:
            self._first_decodes.move_to_end(key)
            logits, iou = cached
        else:
            with torch.inference_mode():
                logits, iou = self.model.decode(
                    emb,
                    coords,
                    labs,
                    mask_input.to(self.device, torch.float32),
                    multimask_output=multimask_output or pick_best,
                )
            if key is not None:
                self._first_decodes[key] = (logits, iou)
                while len(self._first_decodes) > FIRST_DECODES_KEPT:
                    self._first_decodes.popitem(last=False)
        if pick_best:
            with torch.inference_mode():
                logits, iou = select_first_click_mask(logits, iou)
        return logits, iou

    def predict_tile(
        self,
        roi: RoiGrid,
        points: np.ndarray,
        labels: np.ndarray,
        mask_input: torch.Tensor | None = None,
        *,
        source: _extend.TileSource = "prompt",
        parent: RoiGrid | None = None,
        keep_logits: bool = False,
    ) -> Tile:
        """The model on one ROI: prompts in, a :class:`~sammed3d.inference.extend.Tile` out.

        Args:
            roi: The ROI (from :meth:`roi_at`, a previous tile, or checked by
                :meth:`check_roi`); its embedding is computed once, then cached.
            points: ``(N, 3)`` ROI voxel indices in tensor-axis order ``(r0, r1, r2)``
                (:meth:`RoiGrid.native_points_to_voxels` of :meth:`click_voxels`' voxels).
            labels: ``(N,)``: 1 positive, 0 negative.
            mask_input: ``(1, 1, l, l, l)`` previous low-res logits of ``roi``; None: zeros
                (the published first-click prompt).
            source: ``"prompt"`` (user clicks) or ``"extension"`` (grown from ``parent``).
            parent: The ROI an extension tile was grown from.
            keep_logits: Keep the ``(1, 1, S, S, S)`` upsampled logits on the tile.

        Returns:
            The tile: low-res logits, and the ``(S, S, S)`` mask (upsampled logits > 0).

        Raises:
            ValueError: ``mask_input`` of the wrong shape; a ROI of another image or size.
        """
        coords = torch.as_tensor(np.asarray(points, dtype=np.float32))[None]
        lab = torch.as_tensor(np.asarray(labels, dtype=np.int64))[None]
        low, _ = self.predict_torch(coords, lab, mask_input, roi=roi)
        with torch.inference_mode():
            up = self.model.upsample_logits(low)
        mask = (up[0, 0] > 0).cpu().numpy()
        return Tile.create(roi, low, mask, source, parent, up if keep_logits else None)

    def offers_extents(self) -> bool:
        """Whether the model answers a first click with masks of several extents (a model
        trained with ``first_click_multimask``); :meth:`first_click_extents` lists them."""
        return bool(getattr(self.model, "first_click_multimask", False))

    def max_extents(self) -> int:
        """The most masks :meth:`first_click_extents` can list for one click, known before
        any image: the multimask outputs on the main lattice and on each zoom lattice the
        settings allow (``zoom_spacing``, ``fine_zoom_spacing``); 0 for a model that decodes
        one mask per click. Duplicates and masks that reach a zoom ROI's faces are dropped
        later, so a click may list fewer."""
        if not self.offers_extents():
            return 0
        lattices = 1 + int(bool(self.zoom_spacing)) + int(bool(self.fine_zoom_spacing))
        decoder = getattr(self.model, "mask_decoder", None)
        outputs = int(getattr(decoder, "num_multimask_outputs", 3))  # published: 3
        return outputs * lattices

    def first_click_extents(
        self, roi: RoiGrid, points: np.ndarray, labels: np.ndarray, *, zoom: bool = True
    ) -> list[tuple[Tile, float]]:
        """Every mask a first click could get: the model's multimask outputs.

        One click is ambiguous (a click in a lesion is also a click in the white matter
        around it and in the brain); a model trained with ``first_click_multimask`` decodes
        three masks of different extent and keeps one by predicted IoU x stability score
        (SAM's answer to ambiguity, Kirillov et al. 2023). This lists all of them so that a
        person (or a simulated one) can take another.

        Args:
            roi: The ROI of the object's first click on the main lattice.
            points: ``(N, 3)`` native voxels of the first click's prompts.
            labels: ``(N,)``: 1 positive, 0 negative.
            zoom: Also decode the prompts in a ROI of the zoom lattice centred on the first
                point (when ``zoom_spacing`` is set), keeping the outputs that stay away from
                that ROI's faces (:meth:`zoom_first_tile`'s outputs), and likewise on the
                fine zoom lattice (when ``fine_zoom_spacing`` is set).

        Returns:
            ``(tile, score)`` pairs (score: predicted IoU x stability), main lattice first,
            in output order.

        Raises:
            ValueError: the model decodes one mask per click (:meth:`offers_extents`).
        """
        if not self.offers_extents():
            raise ValueError(
                "this model decodes one mask per click (it was not trained with "
                "first_click_multimask): there are no other extents to choose from"
            )
        native = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        rois = [roi]
        if zoom and roi.lattice is self._lattice:
            for lattice in (self._zoom_lattice, self._fine_lattice):
                if lattice is None:
                    continue
                zoomed = lattice.roi_at(native[0], self.roi_size)
                if zoomed.contains_native(native).all():
                    rois.append(zoomed)
        out: list[tuple[Tile, float]] = []
        for where in rois:
            vox = torch.as_tensor(where.native_points_to_voxels(native), dtype=torch.float32)
            lab = torch.as_tensor(np.asarray(labels, dtype=np.int64))
            low, iou = self.predict_torch(vox[None], lab[None], roi=where, multimask_output=True)
            with torch.inference_mode():
                score = iou.float().clamp(min=0.0) * stability_score(low)
                up = self.model.upsample_logits(low)
            for m in range(low.shape[1]):
                tile = Tile.create(where, low[:, m : m + 1], (up[0, m] > 0).cpu().numpy())
                if where is not roi and _extend.touched_faces(tile, self.min_face_voxels):
                    continue  # not small: on the main lattice already
                out.append((tile, float(score[0, m])))
        return out

    def is_zoomed(self, tile: Tile) -> bool:
        """Whether ``tile`` lies on a zoom lattice (:meth:`zoom_first_tile`, or the fine one
        of ``fine_zoom_spacing``)."""
        return self.lattice_level(tile.roi.lattice) > 0

    def lattice_level(self, lattice: Lattice) -> int:
        """0: the main lattice (or another image's), 1: the zoom lattice, 2: the fine one."""
        if lattice is self._zoom_lattice and lattice is not None:
            return 1
        if lattice is self._fine_lattice and lattice is not None:
            return 2
        return 0

    def zoom_first_tile(
        self, tile: Tile, voxel: Sequence[int], points: np.ndarray, labels: np.ndarray
    ) -> Tile:
        """An object's first tile, predicted again on the zoom lattice if its mask is small.

        Zoom-in (:mod:`sammed3d.inference.zoom`): with ``zoom_spacing`` set and a first
        mask small enough (:func:`~sammed3d.inference.zoom.zoom_roi` with ``zoom_fill``),
        the same prompts are decoded in a ROI of the finer lattice centred on ``voxel``; the
        object's next clicks are predicted there until it outgrows that ROI
        (:meth:`leave_zoom`).

        Args:
            tile: The object's first tile on the main lattice (no mask prompt).
            voxel: The first click's native voxel ``(i, j, k)``.
            points: ``(N, 3)`` native voxels of the prompts (the click(s) of ``tile``).
            labels: ``(N,)``: 1 positive, 0 negative.

        Returns:
            The tile on the zoomed ROI, or ``tile`` itself (no zoom lattice, a mask that is
            not small, a prompt outside the zoomed ROI, or a zoomed mask that reaches its
            ROI's faces).
        """
        if self._zoom_lattice is None or tile.roi.lattice is not self._lattice:
            return tile
        roi = zoom_roi(tile.mask, tile.roi, voxel, self._zoom_lattice, self.zoom_fill)
        if roi is None:
            return tile
        native = np.asarray(points, dtype=np.float64)
        if not roi.contains_native(native).all():
            return tile
        vox = roi.native_points_to_voxels(native)
        zoomed = self.predict_tile(roi, vox, labels, keep_logits=tile.logits is not None)
        if self.outgrew_zoom(zoomed):
            return tile
        logger.debug("zoom: first click predicted again at %.2f mm", self.zoom_spacing)
        return zoomed

    def enter_zoom(self, tile: Tile, first: Sequence[int], voxel: Sequence[int]) -> Tile | None:
        """A small object's main-lattice tile moved onto the zoom lattice before a later click.

        A first click's object can end on the main lattice although it is small: a
        first-click rule (the edge pick) or a person
        (:meth:`InteractiveSession.choose_extent`) took one of its main-lattice masks. Its
        later clicks then go where zoom-in would have put them: the zoomed ROI centred on the
        first click (:func:`~sammed3d.inference.zoom.zoom_roi`, the rule of
        :meth:`zoom_first_tile`), with the tile's low-res logits resampled onto it
        (:func:`~sammed3d.inference.zoom.resample_roi_logits`) as the returned tile's logits,
        which the click then gets as its mask prompt. No model run.

        Args:
            tile: The object's only tile, on the main lattice.
            first: The object's first click, native voxel ``(i, j, k)``.
            voxel: The native voxel of the click about to be added.

        Returns:
            The tile on the zoomed ROI (its mask: the resampled logits upsampled, > 0), or
            None: zoom-in off, ``tile`` not on the main lattice, its mask not small (empty,
            on a ROI face, or wider than ``zoom_fill`` of the zoomed ROI), or the zoomed ROI
            does not hold ``voxel``.
        """
        if self._zoom_lattice is None or tile.roi.lattice is not self._lattice:
            return None
        roi = zoom_roi(tile.mask, tile.roi, first, self._zoom_lattice, self.zoom_fill)
        if roi is None or not roi.contains_native(np.asarray([voxel], dtype=np.float64))[0]:
            return None
        low_size = int(tile.low_res_logits.shape[-1])
        with torch.inference_mode():
            prompt = resample_roi_logits(tile.low_res_logits, tile.roi, roi, low_size)
            up = self.model.upsample_logits(prompt)
        mask = (up[0, 0] > 0).cpu().numpy()
        logger.debug("zoom: a small object moved onto the zoom lattice for a later click")
        keep = up if tile.logits is not None else None
        return Tile.create(roi, prompt, mask, "prompt", None, keep)

    def rim_edit_tile(self, tile: Tile, prompt: torch.Tensor, voxel: Sequence[int]) -> Tile:
        """A positive click on a small object's rim, applied as a local edit.

        Random corrective clicks on a good mask of a small object mostly touch its rim (the
        error is a shell a voxel thick), and the model answers such a positive click by
        growing the whole object (docs/default_model.md, "Later clicks of a small object").
        The rim edit keeps the previous low-res logits ``prompt`` except within
        ``rim_edit`` mm of the click, where the new logits may raise them (elementwise
        maximum); distances are taken between the click and the cell centres of the ROI's
        low-res grid, in mm. :class:`~sammed3d.InteractiveSession` applies it to a positive
        later click outside an object's mask within 1.5 native voxels of it
        (:data:`~sammed3d.inference.session.RIM_DISTANCE_VOXELS`), when the object lies on a
        zoom lattice.

        Args:
            tile: The model's answer to the click (:meth:`predict_tile` on the object's ROI).
            prompt: ``(1, 1, l, l, l)`` the low-res logits the click got as mask prompt (the
                same ROI).
            voxel: The click's native voxel ``(i, j, k)``.

        Returns:
            The tile with the edited logits and their mask; ``tile`` itself with the rim
            edit off.

        Raises:
            ValueError: ``prompt`` is not of the shape of ``tile``'s logits.
        """
        if not self.rim_edit:
            return tile
        low = tile.low_res_logits
        if tuple(prompt.shape) != tuple(low.shape):
            raise ValueError(
                f"prompt must be the ROI's previous low-res logits {tuple(low.shape)}, got "
                f"{tuple(prompt.shape)}"
            )
        roi = tile.roi
        n = np.asarray(low.shape[2:], dtype=np.float64)
        size = np.asarray(roi.size, dtype=np.float64)
        cell_mm = np.asarray(roi.grid.spacing, dtype=np.float64) * size / n  # per axis
        centre = (roi.native_to_roi(np.asarray(voxel, dtype=np.float64)) + 0.5) * n / size - 0.5
        axes = [
            ((np.arange(int(k)) - c) * mm) ** 2 for k, c, mm in zip(n, centre, cell_mm, strict=True)
        ]
        dist2 = axes[0][:, None, None] + axes[1][None, :, None] + axes[2][None, None, :]
        ball = torch.as_tensor(dist2 <= self.rim_edit**2, device=low.device)[None, None]
        with torch.inference_mode():
            old = prompt.to(low.device, low.dtype)
            edited = torch.where(ball, torch.maximum(old, low), old)
        return self.edited_tile(tile, edited)

    def rules_summary(self) -> str:
        """The inference rules in effect, one line for a person (a server's start-up banner),
        e.g. ``"zoom-in 1 mm, boundary refinement 3 mm, contrast guard 0.4, first pick edges,
        later check none, rim edit 3 mm, click bounds none"``; rules that are off say so."""

        def mm(name: str, value: float) -> str:
            return f"{name} {value:g} mm" if value else f"{name} off"

        parts = [
            mm("zoom-in", self.zoom_spacing),
            *([mm("fine zoom", self.fine_zoom_spacing)] if self.fine_zoom_spacing else []),
            mm("boundary refinement", self.refine_boundary),
            f"contrast guard {self.contrast_guard:g}"
            if self.contrast_guard
            else "contrast guard off",
            f"first pick {self.first_pick}",
            f"later check {self.later_check}",
            mm("rim edit", self.rim_edit),
            f"click bounds {self.click_bounds}",
        ]
        return ", ".join(parts)

    def edited_tile(self, tile: Tile, low_res_logits: torch.Tensor) -> Tile:
        """``tile`` with other low-res logits (an inference rule's edit of the model's answer,
        same shape): its mask and full-size logits are made from them again.

        Raises:
            ValueError: the logits are not of the shape of ``tile``'s.
        """
        if tuple(low_res_logits.shape) != tuple(tile.low_res_logits.shape):
            raise ValueError(
                f"low-res logits must have the shape {tuple(tile.low_res_logits.shape)}, got "
                f"{tuple(low_res_logits.shape)}"
            )
        with torch.inference_mode():
            up = self.model.upsample_logits(low_res_logits)
        mask = (up[0, 0] > 0).cpu().numpy()
        keep = up if tile.logits is not None else None
        return Tile.create(tile.roi, low_res_logits, mask, tile.source, tile.parent, keep)

    def outgrew_zoom(self, tile: Tile) -> bool:
        """Whether a zoomed tile's mask reaches a face of its ROI (where the image goes on):
        the object is not small, and belongs on the main lattice (:meth:`leave_zoom`)."""
        return self.is_zoomed(tile) and bool(_extend.touched_faces(tile, self.min_face_voxels))

    def leave_zoom(
        self,
        tile: Tile,
        voxel: Sequence[int],
        points: np.ndarray,
        labels: np.ndarray,
        *,
        first: Sequence[int] | None = None,
    ) -> Tile:
        """Move a zoomed object back to the main lattice.

        The object gets the main-lattice ROI it would have had without zoom-in: centred on
        its first click ``first`` (where the model expects the object), or on ``voxel`` (the
        click that moves it) when that ROI does not hold ``voxel``. The zoomed tile's low-res
        logits are resampled onto it as mask prompt, and the prompts are decoded there.

        Args:
            tile: The object's tile on the zoom lattice (its latest prediction).
            voxel: Native voxel of the click that moves the object.
            points: ``(N, 3)`` native voxels of the prompts (those inside the ROI are used).
            labels: ``(N,)``: 1 positive, 0 negative.
            first: Native voxel of the object's first click (default: ``voxel``).

        Returns:
            The tile on the main lattice.
        """
        here = np.asarray(voxel, dtype=np.float64)
        roi = self.lattice.roi_at(
            here if first is None else np.asarray(first, float), self.roi_size
        )
        if not roi.contains_native(here[None])[0]:
            roi = self.lattice.roi_at(here, self.roi_size)
        low_size = int(tile.low_res_logits.shape[-1])
        with torch.inference_mode():
            prompt = resample_roi_logits(tile.low_res_logits, tile.roi, roi, low_size)
        inside = roi.contains_native(np.asarray(points, dtype=np.float64))
        vox = roi.native_points_to_voxels(np.asarray(points, dtype=np.float64)[inside])
        logger.debug("zoom: object moved back to the main lattice")
        return self.predict_tile(
            roi, vox, np.asarray(labels)[inside], prompt, keep_logits=tile.logits is not None
        )

    # ------------------------------------------------------------------------------------
    # native space

    def predict(
        self,
        point_coords: np.ndarray | Sequence[Sequence[float]],
        point_labels: np.ndarray | Sequence[int],
        mask_input: torch.Tensor | None = None,
        roi: RoiGrid | None = None,
        return_logits: bool = False,
        *,
        extend: bool | None = None,
    ) -> Prediction:
        """Segment from clicks given in native voxel indices.

        All points are given to the model at once with ``mask_input`` (for the published
        one-click-per-step interaction use :class:`~sammed3d.InteractiveSession`).

        Args:
            point_coords: ``(N, 3)`` native voxel indices ``(i, j, k)`` (fractional ones are
                rounded to the nearest voxel, :meth:`click_voxels`).
            point_labels: ``(N,)``: 1 positive, 0 negative.
            mask_input: ``(1, 1, l, l, l)`` low-res logits of ``roi`` from a previous call.
            roi: The ROI to use; default: centred on the first positive point (and, without
                ``mask_input``, zoomed in for a small object: :meth:`zoom_first_tile`).
            return_logits: Also return the upsampled ROI logits.
            extend: Override the predictor's ``extend`` setting.

        Returns:
            A :class:`Prediction` with the native mask.

        Raises:
            RuntimeError: no image set.
            ValueError: malformed points/labels, a point outside the image or the ROI, no
                positive point without ``roi``, ``mask_input`` without ``roi``.
        """
        _, lattice = self._image()
        pts = self.click_voxels(point_coords)
        labels = _parse_labels(point_labels, len(pts))
        placed = roi is None
        if roi is None:
            if mask_input is not None:
                raise ValueError(
                    "mask_input belongs to a ROI: pass roi= as well (e.g. the previous "
                    "prediction's .roi)"
                )
            positive = np.flatnonzero(labels == 1)
            if positive.size == 0:
                raise ValueError("need at least one positive point to place the ROI (or pass roi=)")
            roi = lattice.roi_at(pts[positive[0]], self.roi_size)
        else:
            self.check_roi(roi)
        vox = roi.native_points_to_voxels(pts)
        outside = np.flatnonzero(np.any((vox < 0) | (vox >= np.asarray(roi.size)), axis=1))
        if outside.size:
            n = int(outside[0])
            raise ValueError(
                f"point {n} {tuple(pts[n].astype(int).tolist())} lies outside the ROI {roi}; "
                "predict it in its own ROI"
            )
        t0 = time.perf_counter()
        tile = self.predict_tile(roi, vox, labels, mask_input, keep_logits=return_logits)
        if placed and mask_input is None:  # a small object: zoom in
            tile = self.zoom_first_tile(tile, pts[int(np.flatnonzero(labels == 1)[0])], pts, labels)
            roi = tile.roi
        tiles = [tile]
        if (self.extend if extend is None else extend) and not self.is_zoomed(tile):
            tiles += self.extend_tile(tile)
        mask = self.native_mask(tiles, pts, labels)
        logger.debug("predict: %d ROI(s), %.3f s", len(tiles), time.perf_counter() - t0)
        return Prediction(mask, tile.low_res_logits, roi, tuple(tiles), tile.logits)

    def extend_tile(
        self, seed: Tile, existing: Iterable[RoiGrid] = (), *, quiet: bool = False
    ) -> list[Tile]:
        """Grow ``seed`` into neighbouring ROIs where its mask reaches a ROI face.

        :func:`sammed3d.inference.extend.grow` with this predictor's ``min_face_voxels``;
        every new tile comes from :meth:`predict_tile` (``source="extension"``). Callers
        decide whether to extend at all (the ``extend`` setting).

        Args:
            seed: The tile just predicted.
            existing: ROIs the object has already (``seed``'s may be among them): never
                predicted again, and counted against ``max_rois`` with ``seed``.
            quiet: Log a growth cut by ``max_rois`` at debug level instead of info (a mask
                that is only looked at, not shown).

        Returns:
            The new tiles, at most ``max_rois`` minus the ROIs the object has.
        """
        have = {r.key for r in existing} | {seed.roi.key}
        return _extend.grow(
            self._extension_tile,
            seed,
            existing=existing,
            max_new=max(0, self.max_rois - len(have)),
            min_face_voxels=self.min_face_voxels,
            quiet=quiet,
        )

    def _extension_tile(
        self,
        roi: RoiGrid,
        points: np.ndarray,
        labels: np.ndarray,
        mask_input: torch.Tensor,
        parent: RoiGrid,
    ) -> Tile:
        return self.predict_tile(roi, points, labels, mask_input, source="extension", parent=parent)

    def native_block(
        self,
        tiles: Sequence[Tile],
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
    ) -> tuple[tuple[slice, slice, slice], np.ndarray]:
        """Stitch tiles and paste them onto the native grid.

        Args:
            tiles: The object's tiles (one lattice).
            points: ``(N, 3)`` native voxels of the object's clicks; with ``labels`` and
                boundary refinement on (``refine_boundary``), the stitched mask is refined
                (:meth:`refine_mask`) before pasting. None: the model's mask as it is.
            labels: ``(N,)``: 1 positive, 0 negative.

        Returns:
            ``(slices, block)``: native ``(I, J, K)`` slices around the mask's voxels (all
            the tiles cover when the mask is empty) and the bool mask there (nearest
            neighbour from the lattice; the published ``tio.Resample(original, nearest)``).
            The full mask is ``block`` placed at ``slices`` in an all-False array of the
            image's shape (:meth:`native_mask`).
        """
        union, mask = _extend.stitch(tiles)
        if self.refine_boundary and points is not None and labels is not None:
            mask = self.refine_mask(union, mask, tiles, points, labels)
        # only the mask's own box is pasted (the rest is False): far less for a small object
        return union.paste_to_native(mask, within=bbox_slices(mask))

    def refine_mask(
        self,
        union: RoiGrid,
        mask: np.ndarray,
        tiles: Sequence[Tile],
        points: np.ndarray,
        labels: np.ndarray,
    ) -> np.ndarray:
        """Boundary refinement of a stitched mask (:mod:`sammed3d.inference.refine`).

        Args:
            union: The box of ``tiles`` (:func:`~sammed3d.inference.extend.stitch`).
            mask: ``union.size`` bool stitched mask.
            tiles: The tiles (their ROIs' intensities are the image; voxels no tile covers
                and voxels outside the lattice carry no data).
            points: ``(N, 3)`` native voxels of the object's clicks.
            labels: ``(N,)``: 1 positive, 0 negative.

        Returns:
            The refined ``union.size`` bool mask (``mask`` itself with refinement off).
        """
        if not self.refine_boundary:
            return mask
        image = np.zeros(union.size, dtype=np.float32)
        valid = np.zeros(union.size, dtype=bool)
        for tile in tiles:
            roi = tile.roi
            offset = [s - u for s, u in zip(roi.start, union.start, strict=True)]
            inside = tuple(
                slice(o + v.start, o + v.stop) for o, v in zip(offset, roi.valid, strict=True)
            )
            image[inside] = self.roi_intensity(roi)[roi.valid]
            valid[inside] = True
        spacing = float(min(union.lattice.grid.spacing))
        band = max(1, int(round(self.refine_boundary / spacing)))
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        lab = np.asarray(labels).reshape(-1)
        vox = nearest_index(union.native_points_to_voxels(pts)).astype(np.int64)
        return refine_boundary(
            image, mask, band, positive=vox[lab == 1], negative=vox[lab == 0], valid=valid
        )

    def native_mask(
        self,
        tiles: Sequence[Tile],
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
    ) -> np.ndarray:
        """Stitched native ``(I, J, K)`` bool mask of ``tiles`` (False outside them); with
        ``points`` and ``labels``, refined as in :meth:`native_block`."""
        volume = self.require_image()
        out = np.zeros(volume.shape, dtype=bool)
        slices, block = self.native_block(tiles, points, labels)
        out[slices] = block
        return out

    def check_roi(self, roi: RoiGrid) -> None:
        """Check that ``roi`` is a model input of the current image.

        Raises:
            TypeError: not a :class:`~sammed3d.inference.geometry.RoiGrid`.
            ValueError: a ROI of another image (``set_image`` was called since), or of a size
                other than the model's input.
        """
        if not isinstance(roi, RoiGrid):
            raise TypeError(f"roi must be a RoiGrid, got {type(roi).__name__}")
        if roi.lattice is not self._lattice and not self.lattice_level(roi.lattice):
            raise ValueError("this ROI belongs to another image (set_image was called since)")
        if roi.size != (self.roi_size,) * 3:
            raise ValueError(f"ROI size {roi.size} != model input size {self.roi_size}")


def _finer_spacing(name: str, value: float | None, model: Any, coarser: float, than: str) -> float:
    """A zoom spacing setting (``zoom_spacing``, ``fine_zoom_spacing``) resolved: ``value``,
    or the checkpoint's (``model.config``) when None; 0 is off.

    A given value must be finer than ``coarser`` (``than`` names it in the error); the
    checkpoint's is switched off (0) when it is not.

    Raises:
        ValueError: not a finite number >= 0, or a given value not finer than ``coarser``.
    """
    explicit = value is not None
    if value is None:
        value = float(getattr(getattr(model, "config", None), name, 0.0) or 0.0)
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be 0 (off) or a spacing in mm, got {value}")
    if value and not value < coarser:
        if explicit:
            raise ValueError(f"{name} must be finer than {than} (0: off), got {value:g}")
        return 0.0  # the checkpoint's is not finer: off
    return value


def _parse_labels(point_labels: np.ndarray | Sequence[int], n: int) -> np.ndarray:
    """``(n,)`` int64 labels, each 1 (positive) or 0 (negative); ValueError otherwise."""
    try:
        labels = np.asarray(point_labels)
    except (TypeError, ValueError):
        raise ValueError("point_labels must be numbers: (N,) labels, 1 or 0") from None
    labels = labels.reshape(-1) if labels.ndim == 0 else labels
    if labels.shape != (n,):
        raise ValueError(f"point_labels must have shape ({n},), got {labels.shape}")
    if not np.all(np.isin(labels, (0, 1))):
        raise ValueError(
            f"point_labels must be 1 (positive) or 0 (negative), got {labels.tolist()}"
        )
    return labels.astype(np.int64)


def _model_device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")
