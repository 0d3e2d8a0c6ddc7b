"""Interactive segmentation: clicks in native voxel indices, several objects, undo/redo.

:class:`InteractiveSession` follows the published interaction (docs/faithfulness.md §6.2):
each click is one step that gives the model **only the new click** plus **the previous
low-res logits** of that ROI as mask prompt (zeros at an object's first click). With
``accumulate_clicks=True`` every click of the object inside the ROI is given instead (the
current MedIM evaluation scripts, docs/faithfulness.md §5.1 step 8).

Each object has its own label value and its own mask; objects never change each other's
masks. Where masks overlap, :attr:`InteractiveSession.label_map` (one value per voxel)
follows the session's ``overlap`` rule: ``"later-on-top"`` (default: a later object is
painted over earlier ones, so a tumour segmented after its organ stays visible) or
``"earlier-kept"`` (an object never takes voxels from one created before it: neighbours
segmented one after another). :meth:`InteractiveSession.export_label_map` warns when an
object is empty or keeps less than half of its voxels in the written file.

With a predictor that zooms (``zoom_spacing``, :mod:`sammed3d.inference.zoom`), a small
object's first click is predicted again in a finer ROI, where its later clicks go until it
outgrows that ROI or a positive click falls outside it; it then continues on the main lattice.
A small object left on the main lattice by a first-click rule or
:meth:`~InteractiveSession.choose_extent` moves to the finer ROI at its next click
(:meth:`SamMed3DPredictor.enter_zoom`). With ``rim_edit`` on, a positive click on the rim of
such a zoomed object changes it only near the click (:meth:`SamMed3DPredictor.rim_edit_tile`).

The evaluation drives this same class with simulated clicks. For the published protocol
that centres the ROI on the ground-truth box, call :meth:`InteractiveSession.set_roi_from_mask`
(or :meth:`~InteractiveSession.set_roi_center`) before the object's first click.

Example:
    >>> session = InteractiveSession(SamMed3DPredictor.from_checkpoint("turbo.pth"))
    >>> session.set_image("ct.nii.gz", modality="CT")
    >>> mask = session.add_point((250, 261, 140))            # object 1, positive click
    >>> mask = session.add_point((262, 255, 141), positive=False)
    >>> session.undo(); session.redo()
    >>> session.new_object()                                  # object 2
    2
    >>> mask = session.add_point((120, 300, 90))
    >>> session.export_label_map("labels.nii.gz")
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sammed3d.clicks import Click
from sammed3d.inference import extend as _extend
from sammed3d.inference.bounds import MaskBound, bound_logits, bounds_click
from sammed3d.inference.contrast import (
    CONTRAST_RATIO,
    GUARD_GROWTH,
    border_contrast,
    click_like_inside,
    contrast_pick,
    edge_pick,
    edge_score,
    edge_strength,
    later_click_refused,
    mask_edge_score,
)
from sammed3d.inference.extend import Tile
from sammed3d.inference.geometry import RoiGrid
from sammed3d.inference.predictor import SamMed3DPredictor
from sammed3d.io import check_output_file, check_volume_name, write_volume

logger = logging.getLogger(__name__)

MAX_LABEL = 65535

#: How :attr:`InteractiveSession.label_map` resolves voxels claimed by several objects.
OVERLAP_RULES = ("later-on-top", "earlier-kept")
#: An export warns when an object keeps less than this share of its voxels.
HIDDEN_WARNING_SHARE = 0.5


@dataclass(frozen=True)
class Extent:
    """One mask an object's first click could get (:meth:`InteractiveSession.extents`).

    Attributes:
        index: Position in the list, smallest mask first (give it to
            :meth:`InteractiveSession.choose_extent`).
        voxels: Native voxels of the mask: for the object's mask now (``current``) as the
            object has it; for the others, the mask in its ROI, refined on that ROI alone (a
            mask on a ROI face grows through that face when chosen, as any mask does, and is
            then refined over all its ROIs: ``taken_voxels``).
        volume_ml: The same in millilitres (voxels x native voxel volume).
        score: The model's confidence: predicted IoU x stability score, the rule that picks
            among the masks of one lattice. Scores of the two lattices are not compared: a
            small object's pick is the best-scored mask of the zoomed ROI, whatever the
            1.5 mm masks score (zoom-in, :mod:`sammed3d.inference.zoom`).
        spacing_mm: Spacing of the lattice it was predicted on (the zoom lattice for a small
            object, :mod:`sammed3d.inference.zoom`).
        current: Whether it is the object's mask now.
        picked: Whether it is the pick for the click: the model's own, or the extent a
            first-click rule took instead (the edge pick, or with the contrast guard on the
            sharper extent that replaced a low-contrast pick,
            :mod:`sammed3d.inference.contrast`).
        taken_voxels: Native voxels the object's mask would have with this extent taken
            (grown through the ROI faces it reaches and refined over all its ROIs): equal to
            ``voxels`` for the current mask and for a mask that reaches no ROI face; known
            for the others once a first-click rule has grown them (the edge pick does, at
            the click); None when it would grow and has not been grown yet.
        model_pick: Whether it is the mask the model itself picked for the click (predicted
            IoU x stability): the ``picked`` one, unless a first-click rule took another.
    """

    index: int
    voxels: int
    volume_ml: float
    score: float
    spacing_mm: float
    current: bool
    picked: bool
    taken_voxels: int | None = None
    model_pick: bool = False


#: A native mask block: where it lies (index slices) and its bool voxels.
_Block = tuple[tuple[slice, ...], np.ndarray]
#: An object's first-click extents: key, tiles, voxel counts, scores, blocks, and the voxels
#: of those a first-click rule grew as they would be taken (by index; filled as they are).
_ExtentCache = tuple[
    tuple[Any, ...], list[Tile], list[int], list[float], list[_Block], dict[int, int]
]

#: The rules that can change what a click gives (:attr:`InteractiveSession.rule`).
RULES = ("edge pick", "contrast guard", "edge check", "rim edit")

#: A positive later click outside an object's mask within this many native voxels of it
#: (face and edge neighbours) is a rim click: with the rim edit on, a small object changes
#: only near it (:meth:`SamMed3DPredictor.rim_edit_tile`).
RIM_DISTANCE_VOXELS = 1.5

#: Two first-click masks with at least this Dice are offered once (the better-scored one).
EXTENT_DUPLICATE_DICE = 0.9


@dataclass(frozen=True, eq=False)
class _ObjectState:
    """Everything that defines one object's mask (immutable: history keeps these)."""

    clicks: tuple[Click, ...] = ()
    tiles: tuple[Tile, ...] = ()
    roi: RoiGrid | None = None  # ROI chosen for the object's first click, if set explicitly
    active: int | None = None  # tile of the last click
    first_pick: Tile | None = None  # the first click's pick (extents): the model's, or a rule's
    model_pick: Tile | None = None  # the model's own, when a first-click rule took another
    bound: MaskBound | None = None  # click bounds: the mask before the last click, its bound


@dataclass(eq=False)
class _Object:
    label: int
    state: _ObjectState = field(default_factory=_ObjectState)
    slices: tuple[slice, slice, slice] | None = None  # native footprint of the mask
    block: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class _Action:
    label: int
    before: _ObjectState | None  # None: the object did not exist
    after: _ObjectState | None  # None: the object was removed


class InteractiveSession:
    """Click-by-click segmentation of several objects in one image.

    Args:
        predictor: The predictor (its ``extend``/``max_rois`` settings apply).
        accumulate_clicks: Give the model every click of the object inside the ROI at each
            step instead of only the new one. Default (None): what the model was trained
            with (published models: only the new one; models with ``click_maps``: all).
        max_history: Undo levels kept.
        overlap: Where objects overlap in :attr:`label_map`: ``"later-on-top"`` (default)
            or ``"earlier-kept"`` (see the module docstring).
    """

    def __init__(
        self,
        predictor: SamMed3DPredictor,
        *,
        accumulate_clicks: bool | None = None,
        max_history: int = 100,
        overlap: str = "later-on-top",
    ) -> None:
        if not isinstance(predictor, SamMed3DPredictor):
            raise TypeError(f"expected a SamMed3DPredictor, got {type(predictor).__name__}")
        if max_history < 1:
            raise ValueError(f"max_history must be >= 1, got {max_history}")
        self.overlap = _check_overlap(overlap)
        self.predictor = predictor
        if accumulate_clicks is None:
            accumulate_clicks = bool(getattr(predictor.model, "accumulates_clicks", False))
        self.accumulate_clicks = bool(accumulate_clicks)
        self.max_history = int(max_history)
        self._objects: dict[int, _Object] = {}
        self._current: int | None = None
        self._undo: list[_Action] = []
        self._redo: list[_Action] = []
        # (label, first click, caller ROI) -> first-click masks, smallest first
        # (with each mask's voxel count, score and native (slices, block) on its own ROI)
        self._extent_cache: _ExtentCache | None = None
        # label -> (native mask block, its edge score): the edge check's score of the mask
        # an object has now (valid while that block is the object's)
        self._edge_scores: dict[int, tuple[np.ndarray, float]] = {}
        #: What a first-click rule (the edge pick), the edge check or the contrast guard
        #: changed at the last click (None: nothing, or the click was undone or its extent
        #: chosen), a line to show; it starts with the rule's name.
        self.rule_note: str | None = None
        #: The name of that rule: one of :data:`RULES`, or None with ``rule_note``.
        self.rule: str | None = None

    # ------------------------------------------------------------------------------------
    # image and objects

    def set_image(self, image: Any, **kwargs: Any) -> None:
        """Set the image (see :meth:`SamMed3DPredictor.set_image`) and clear everything."""
        self.predictor.set_image(image, **kwargs)
        self.reset()

    def reset(self) -> None:
        """Remove every object, click and the undo/redo history (the image stays)."""
        self._objects.clear()
        self._current = None
        self._undo.clear()
        self._redo.clear()
        self._extent_cache = None
        self._edge_scores.clear()
        self.rule = self.rule_note = None

    def new_object(self, label: int | None = None) -> int:
        """Start a new object and make it current; returns its label value.

        Args:
            label: Its value in the label map (1..65535); default: the smallest unused.

        Raises:
            RuntimeError: no image set.
            ValueError: a label out of range or in use.
        """
        self.predictor.require_image()
        if label is None:
            label = 1
            while label in self._objects:
                label += 1
        label = self._check_label(label)
        if label in self._objects:
            raise ValueError(f"object {label} exists already; select_object({label}) to edit it")
        self._objects[label] = _Object(label)
        self._current = label
        self._record(_Action(label, None, _ObjectState()))
        return label

    def select_object(self, label: int) -> None:
        """Make an existing object current (later clicks edit it)."""
        label = self._check_label(label)
        if label not in self._objects:
            raise ValueError(f"no object {label}; existing: {sorted(self._objects)}")
        self._current = label

    @property
    def labels(self) -> tuple[int, ...]:
        """Label values of the objects, in creation order."""
        return tuple(self._objects)

    @property
    def current_label(self) -> int | None:
        return self._current

    # ------------------------------------------------------------------------------------
    # ROI placement (evaluation protocol)

    def set_roi(self, roi: RoiGrid | None) -> None:
        """Use ``roi`` for the current object's first click (None: centre on the click)."""
        obj = self._current_or_new()
        if obj.state.tiles:
            raise ValueError(
                f"object {obj.label} already has a prediction; set the ROI before its first click"
            )
        if roi is not None:
            self.predictor.check_roi(roi)
        self._apply(obj, replace(obj.state, roi=roi))

    def set_roi_center(self, ijk: Sequence[float]) -> None:
        """Centre the current object's ROI on a native voxel instead of its first click."""
        self.set_roi(self.predictor.roi_at(ijk))

    def set_roi_from_mask(self, mask: np.ndarray) -> None:
        """Centre the current object's ROI on a mask's bounding box (published evaluation)."""
        self.set_roi(self.predictor.roi_from_mask(mask))

    # ------------------------------------------------------------------------------------
    # clicks

    def add_point(self, coord: Sequence[float], positive: bool = True) -> np.ndarray:
        """Add a click to the current object (one is created if there is none).

        :meth:`add_click` followed by :attr:`mask`; use :meth:`add_click` and
        :meth:`voxel_count` to skip building the full-size mask.

        Args:
            coord: Native voxel index ``(i, j, k)``; a fractional one is rounded to the
                nearest voxel (:meth:`SamMed3DPredictor.click_voxels`).
            positive: Foreground (True) or background (False) click.

        Returns:
            The current object's ``(I, J, K)`` bool mask after this click.

        Raises:
            RuntimeError / ValueError: see :meth:`add_click`.
        """
        self.add_click(coord, positive)
        return self.mask

    def add_click(self, coord: Sequence[float], positive: bool = True) -> Click:
        """Add a click to the current object (one is created if there is none).

        The click is rounded to its native voxel and checked once
        (:meth:`SamMed3DPredictor.click_voxels`); the model gets it in the ROI of the object
        that holds it deepest (or a new ROI centred on it), with that ROI's previous low-res
        logits as mask prompt.

        With the edge check on (``later_check="edges"``), a later click whose mask lost its
        edges is refused: the object keeps its mask, the click is not among its
        :attr:`clicks` (it leaves no undo step) and :attr:`rule_note` says so.

        With the rim edit on (``rim_edit``), a positive later click on the rim of a zoomed-in
        object (outside its mask, within :data:`RIM_DISTANCE_VOXELS` native voxels of it)
        changes the object only near the click (:meth:`SamMed3DPredictor.rim_edit_tile`);
        :attr:`rule` is then ``"rim edit"``.

        With click bounds on (``click_bounds``, :mod:`sammed3d.inference.bounds`), the mask
        after a negative later click lies within the mask before it (without the clicked
        voxel), and with ``"both"`` the mask after a positive later click holds the mask
        before it.

        Args:
            coord: Native voxel index ``(i, j, k)``; a fractional one is rounded to the
                nearest voxel, ties up (``2.5 -> 3``).
            positive: Foreground (True) or background (False) click.

        Returns:
            The click as given: its native voxel and sign (the object's mask:
            :attr:`mask`, :meth:`voxel_count`).

        Raises:
            RuntimeError: no image set.
            ValueError: the point is malformed or outside the image; the first click of an
                object is negative and no ROI was set; a negative click outside every ROI of
                the object (nothing to remove there).
        """
        t0 = time.perf_counter()
        pred = self.predictor
        self.rule = self.rule_note = None
        # the undo history as it was, should the edge check refuse the click
        history = (list(self._undo), list(self._redo)) if pred.later_check == "edges" else None
        voxel = pred.click_voxels(coord)  # (1, 3) int64: the one rounding and image check
        click = Click(tuple(int(v) for v in voxel[0]), bool(positive))  # type: ignore[arg-type]
        if self._current is None and not click.positive:
            raise ValueError(
                f"negative click {click.coord} before any object: the first click of an "
                "object must be positive (or its ROI placed first, set_roi_*)"
            )
        obj = self._current_or_new()
        state = obj.state
        tiles = list(state.tiles)
        bounded = bool(state.clicks) and bounds_click(pred.click_bounds, click.positive)
        bound = None
        if bounded and obj.slices is not None and obj.block is not None:
            cleared = None if click.positive else click.coord
            bound = MaskBound.of(not click.positive, obj.slices, obj.block, cleared)
        if state.clicks and state.roi is None and len(tiles) == 1:
            # a small object that a first-click rule or choose_extent left on the main
            # lattice: its later clicks go to the zoom lattice, as zoom-in's would
            zoomed = pred.enter_zoom(tiles[0], state.clicks[0].coord, voxel[0])
            if zoomed is not None:
                tiles = [zoomed]
        index = self._tile_for(tiles, voxel)
        clicks = (*state.clicks, click)
        if index is None and click.positive and tiles and pred.is_zoomed(tiles[0]):
            # outside the zoomed ROI of a small object: it goes back to the main lattice
            tile = pred.leave_zoom(
                tiles[0], voxel[0], *self._prompts(clicks, click), first=clicks[0].coord
            )
            tiles = [tile]
            if pred.extend:
                tiles += pred.extend_tile(tile, existing=[tile.roi])
            self._apply(obj, _ObjectState(clicks, tuple(tiles), state.roi, 0, bound=bound))
            return click
        if index is None:
            if state.roi is not None and not tiles:
                roi = state.roi
            elif not click.positive:
                where = "before its first positive click" if not tiles else "outside its ROIs"
                raise ValueError(
                    f"negative click {click.coord} on object {obj.label} {where}: there is "
                    "nothing to remove there (a negative click must fall inside the object's "
                    "ROIs: click positive there first)"
                )
            else:
                roi = pred.lattice.roi_at(voxel[0], pred.roi_size)
            if not roi.contains_native(voxel)[0]:
                raise ValueError(f"click {click.coord} lies outside the object's ROI {roi}")
            mask_input = None
            old: Tile | None = None
        else:
            old = tiles[index]
            roi = old.roi
            mask_input = old.low_res_logits
        if self.accumulate_clicks:
            inside = [c for c in clicks if roi.contains_native(np.asarray([c.coord]))[0]]
        else:
            inside = [click]
        vox = roi.native_points_to_voxels(np.asarray([c.coord for c in inside], dtype=np.float64))
        labels = np.asarray([int(c.positive) for c in inside], dtype=np.int64)
        tile = pred.predict_tile(roi, vox, labels, mask_input)
        if bounded and mask_input is not None:  # the clicked ROI's logits get the bound too
            tile = pred.edited_tile(
                tile, bound_logits(mask_input, tile.low_res_logits, click.positive)
            )
        rim = False  # a positive later click on the rim of a zoomed-in (small) object
        if (
            pred.rim_edit > 0
            and mask_input is not None
            and click.positive
            and pred.is_zoomed(tile)
            and _on_rim(obj, voxel[0])
        ):
            tile = pred.rim_edit_tile(tile, mask_input, voxel[0])
            rim = True
        if old is None and not tiles and state.roi is None:  # a small object: zoom in
            points = np.asarray([c.coord for c in inside], dtype=np.int64)
            tile = pred.zoom_first_tile(tile, voxel[0], points, labels)
        elif pred.outgrew_zoom(tile):  # not small after all: back to the main lattice
            tile = pred.leave_zoom(
                tile, voxel[0], *self._prompts(clicks, click), first=clicks[0].coord
            )
            tiles, index, old = [], None, None
        roi = tile.roi
        if old is None:
            tiles.append(tile)
        else:
            tiles[index] = tile  # an extension tile clicked in becomes a prompted one
        if pred.extend and not pred.is_zoomed(tile):
            stale = _extend.descendants(tiles, roi)
            tiles = [t for t in tiles if t.roi not in stale]
            tiles += pred.extend_tile(tile, existing=[t.roi for t in tiles])
        active = next(i for i, t in enumerate(tiles) if t.roi == roi)
        pick = tile if len(clicks) == 1 else None
        before = (obj.slices, obj.block)
        self._apply(obj, _ObjectState(clicks, tuple(tiles), state.roi, active, pick, bound=bound))
        if pick is not None and pred.offers_extents():
            self._first_pick_rules(obj)
        elif pick is None:
            refused = history is not None and self._edge_check(obj, state, before, history)
            if not refused and pred.contrast_guard:
                self._guard_later_click(obj, state, before)
            if rim and not refused and self.rule is None:
                self._tell(
                    obj.label,
                    "rim edit",
                    f"a positive click on the rim of a small object changed the model's "
                    f"answer only within {pred.rim_edit:g} mm of the click "
                    f"({self.voxel_count(obj.label)} voxels)",
                )
        logger.debug(
            "click %s %s on object %d: %d ROI(s), %.3f s",
            "+" if click.positive else "-",
            click.coord,
            obj.label,
            len(obj.state.tiles),  # after the rules: what the object has now
            time.perf_counter() - t0,
        )
        return click

    # ------------------------------------------------------------------------------------
    # other extents of a first click

    def extents(self, label: int | None = None) -> tuple[Extent, ...]:
        """The masks an object's first click could get, smallest first.

        One click is ambiguous: a click in a lesion is also a click in the tissue around it.
        A model trained with ``first_click_multimask`` decodes masks of several extents and
        keeps one (:meth:`SamMed3DPredictor.first_click_extents`); this lists them, so a
        person can take another with :meth:`choose_extent` (or cycle with
        :meth:`next_extent`) instead of correcting with clicks. Masks that are nearly the
        same (Dice >= ``EXTENT_DUPLICATE_DICE``) are listed once. Only after the object's
        first click: later clicks refine the chosen mask.

        Args:
            label: The object (default: the current one).

        Returns:
            The extents, smallest first; one is ``current`` (the mask shown) and one is
            ``picked`` (the click's pick: the model's own, or the extent the edge pick or
            the contrast guard took instead), often the same.

        Raises:
            ValueError: no such object; the object has no click or more than one; the model
                decodes one mask per click.
        """
        key, state = self._extent_key(label)
        if self._extent_cache is None or self._extent_cache[0] != key:
            self._extent_cache = (key, *self._compute_extents(state, self._objects[key[0]]), {})
        _, tiles, voxels, scores, _, grown = self._extent_cache
        pred = self.predictor
        prompted = state.tiles[state.active] if state.active is not None else None
        model = state.model_pick if state.model_pick is not None else state.first_pick
        size = float(np.prod(self.predictor.volume.spacing)) / 1000.0
        found = []
        for n, tile in enumerate(tiles):
            current = prompted is not None and _same_tile(tile, prompted)
            # the mask shown is listed as the object has it (grown through ROI faces, refined
            # over all its ROIs); the others as their own ROI gives them
            count = self.voxel_count(key[0]) if current else voxels[n]
            taken = count if current else grown.get(n)
            if taken is None and not (
                pred.extend
                and not pred.is_zoomed(tile)
                and _extend.touched_faces(tile, pred.min_face_voxels)
            ):
                taken = count  # it reaches no ROI face: taken as listed
            found.append(
                Extent(
                    index=n,
                    voxels=count,
                    volume_ml=count * size,
                    score=scores[n],
                    spacing_mm=float(np.mean(tile.roi.grid.spacing)),
                    current=current,
                    picked=state.first_pick is not None and _same_tile(tile, state.first_pick),
                    taken_voxels=taken,
                    model_pick=model is not None and _same_tile(tile, model),
                )
            )
        return tuple(found)

    def choose_extent(self, index: int, label: int | None = None) -> Extent:
        """Give an object's first click the mask ``index`` of :meth:`extents` (undoable).

        The mask replaces the object's mask (a mask on a ROI face grows through it, as
        after a click); the next click refines it.

        Returns:
            The extent taken, with ``voxels`` / ``volume_ml`` of the object's mask now (more
            than listed when the mask grew through a ROI face).

        Raises:
            ValueError: see :meth:`extents`; ``index`` out of range.
        """
        found = self.extents(label)
        if isinstance(index, bool) or not isinstance(index, int | np.integer):
            raise ValueError(f"extent index must be an integer, got {index!r}")
        if not 0 <= int(index) < len(found):
            raise ValueError(f"extent index must be in 0..{len(found) - 1}, got {index}")
        assert self._extent_cache is not None
        key, tiles, *_ = self._extent_cache
        obj = self._objects[key[0]]
        state = obj.state
        self.rule = self.rule_note = None  # the mask is now the one chosen
        chosen = self._extent_tiles(tiles[int(index)])
        self._apply(
            obj,
            _ObjectState(state.clicks, chosen, state.roi, 0, state.first_pick, state.model_pick),
        )
        count = self.voxel_count(obj.label)
        size = float(np.prod(self.predictor.volume.spacing)) / 1000.0
        return replace(found[int(index)], current=True, voxels=count, volume_ml=count * size)

    def next_extent(self, label: int | None = None, step: int = 1) -> Extent:
        """Cycle an object's first-click mask to the next larger extent (after the largest:
        the smallest); ``step=-1``: the next smaller one. See :meth:`choose_extent`."""
        found = self.extents(label)
        now = next((e.index for e in found if e.current), -1 if step > 0 else 0)
        return self.choose_extent((now + int(step)) % len(found), label)

    def _extent_tiles(self, tile: Tile, *, quiet: bool = False) -> tuple[Tile, ...]:
        """The tiles an object gets when its first click takes the extent ``tile`` (grown
        through the ROI faces its mask reaches, as after a click). ``quiet``: a growth cut
        by the ROI budget is logged at debug level only (an extent only looked at)."""
        pred = self.predictor
        if pred.extend and not pred.is_zoomed(tile):
            return (tile, *pred.extend_tile(tile, existing=[tile.roi], quiet=quiet))
        return (tile,)

    def _first_click_candidates(
        self, obj: _Object
    ) -> tuple[list[tuple[Tile, ...]], list[_Block], list[int], list[float]]:
        """The masks a first-click rule chooses among: the object's mask now, then every
        other extent (:meth:`extents`) as it would be taken (grown through the ROI faces it
        reaches).

        Returns:
            ``candidates``: the other extents' tiles (``candidates[n - 1]`` belongs to
            ``masks[n]``); ``masks``: native ``(slices, block)`` of the object's mask and of
            each candidate; ``levels``: the lattice of each mask's ROI (0 main, 1 zoom,
            2 fine zoom); ``scores``: the model's score of each (predicted IoU x stability).
        """
        pred = self.predictor
        state = obj.state
        assert obj.slices is not None and obj.block is not None
        key, _ = self._extent_key(obj.label)
        self._extent_cache = (key, *self._compute_extents(state, obj), {})
        _, tiles, _, found_scores, blocks, grown = self._extent_cache
        shown = state.tiles[state.active] if state.active is not None else None
        own = next(
            (
                s
                for t, s in zip(tiles, found_scores, strict=True)
                if shown is not None and _same_tile(t, shown)
            ),
            float("nan"),
        )
        points = np.asarray([state.clicks[0].coord], dtype=np.int64)
        candidates: list[tuple[Tile, ...]] = []
        masks: list[_Block] = [(obj.slices, obj.block)]
        levels = [pred.lattice_level(shown.roi.lattice) if shown is not None else 0]
        scores = [own]
        for n, (tile, score, (slices, block)) in enumerate(
            zip(tiles, found_scores, blocks, strict=True)
        ):
            if shown is not None and _same_tile(tile, shown):
                # the object's mask is this extent as taken (grown through ROI faces): listed
                # with that size should another rule take another extent
                grown[n] = int(np.count_nonzero(obj.block))
                continue
            # grown quietly: a budget cut is told if the user takes this extent
            chosen = self._extent_tiles(tile, quiet=True)
            if len(chosen) > 1:  # grown through ROI faces: the mask as it would be taken
                slices, block = pred.native_block(chosen, points, np.ones(1, np.int64))
            grown[n] = int(np.count_nonzero(block))
            candidates.append(chosen)
            masks.append((slices, block))
            levels.append(pred.lattice_level(tile.roi.lattice))
            scores.append(score)
        return candidates, masks, levels, scores

    def _first_pick_rules(self, obj: _Object) -> None:
        """Give the first click of ``obj`` another extent than the model's pick when a rule
        says so (:mod:`sammed3d.inference.contrast`): with ``first_pick="edges"`` the extent
        with the highest edge score; else, with the contrast guard on, a sharper extent when
        the pick's border contrast is low.

        Amends the click's undo step, so that one undo still removes the click.
        """
        pred = self.predictor
        edges = pred.first_pick == "edges"
        if not edges and not pred.contrast_guard:
            return
        state = obj.state
        volume = pred.require_image()
        image, sp = volume.array, volume.spacing
        assert obj.slices is not None and obj.block is not None
        if not edges:
            own = border_contrast(image, obj.slices, obj.block, spacing=sp)
            if own >= pred.contrast_guard:
                return
        shown_block = obj.block
        candidates, masks, _, _ = self._first_click_candidates(obj)
        shown = state.tiles[state.active] if state.active is not None else None
        assert self._extent_cache is not None  # just computed: the listed extents
        tiles = self._extent_cache[1]
        if edges:
            click = state.clicks[0].coord
            contrasts = [border_contrast(image, *m, spacing=sp) for m in masks]
            strengths = [edge_strength(image, *m, spacing=sp) for m in masks]
            like = [click_like_inside(image, *m, click, spacing=sp) for m in masks]
            n = edge_pick(contrasts, strengths, like)
            if n == 0:
                return
            rule = "edge pick"
            why, other, better = _edge_pick_reason(
                edge_score(contrasts[0], strengths[0]),
                edge_score(contrasts[n], strengths[n]),
                like[0],
                like[n],
            )
        else:
            contrasts = [own] + [border_contrast(image, *m, spacing=sp) for m in masks[1:]]
            n = contrast_pick(contrasts, 0, pred.contrast_guard)
            if n == 0:
                return
            rule, why = "contrast guard", f"border contrast {own:.2f}"
            other, better = "a sharper one", f"border contrast {contrasts[n]:.2f}"
        best = candidates[n - 1]
        after = _ObjectState(state.clicks, best, state.roi, 0, best[0], shown)
        before = self._undo[-1].before
        self._set_state(obj.label, after)
        self._undo[-1] = _Action(obj.label, before, after)
        listed = next(
            (i for i, t in enumerate(tiles) if shown is not None and _same_tile(t, shown)), None
        )
        where = f"extent {listed}" if listed is not None else "among the extents"
        self._tell(
            obj.label,
            rule,
            f"the model's mask ({np.count_nonzero(shown_block)} voxels"
            f"{', ' + why if why else ''}) replaced by {other} "
            f"({self.voxel_count(obj.label)} voxels, {better}); the model's own mask is {where}",
        )

    def _guard_later_click(
        self,
        obj: _Object,
        state: _ObjectState,
        before: tuple[tuple[slice, ...] | None, np.ndarray | None],
    ) -> None:
        """Keep the tiles of ``state`` (the object before a later click) when the click made
        the mask more than ``GUARD_GROWTH`` times as large and its border contrast fell below
        ``contrast_guard`` and below the previous contrast / ``CONTRAST_RATIO`` (the contrast
        guard, :mod:`sammed3d.inference.contrast`). The click is kept and goes to the model
        with the next one. Amends the click's undo step."""
        slices, block = before
        if slices is None or block is None or obj.slices is None or obj.block is None:
            return
        old = int(np.count_nonzero(block))
        if np.count_nonzero(obj.block) <= GUARD_GROWTH * old:
            return
        pred = self.predictor
        volume = pred.require_image()
        image, sp = volume.array, volume.spacing
        new_c = border_contrast(image, obj.slices, obj.block, spacing=sp)
        if new_c >= pred.contrast_guard:
            return
        old_c = border_contrast(image, slices, block, spacing=sp)
        if new_c * CONTRAST_RATIO > old_c:
            return
        # the mask stays exactly as it was: the kept click's point must not move it through
        # boundary refinement (a positive click's voxel is always refined in)
        pinned = MaskBound.pin(slices, block)  # type: ignore[arg-type]
        after = replace(obj.state, tiles=state.tiles, active=state.active, bound=pinned)
        undo_before = self._undo[-1].before
        grown = int(np.count_nonzero(obj.block))
        self._set_state(obj.label, after)
        self._undo[-1] = _Action(obj.label, undo_before, after)
        self._tell(
            obj.label,
            "contrast guard",
            f"the mask this click gave ({grown} voxels, border contrast {new_c:.2f}, was "
            f"{old_c:.2f}) was not taken; the click is kept for the next one (undo it if it "
            "was wrong, or switch the guard off)",
        )

    def _edge_check(
        self,
        obj: _Object,
        state: _ObjectState,
        before: tuple[tuple[slice, ...] | None, np.ndarray | None],
        history: tuple[list[_Action], list[_Action]],
    ) -> bool:
        """The edge check of a later click (``later_check="edges"``,
        :func:`~sammed3d.inference.contrast.later_click_refused`): when the mask the click
        gave lost too much of the previous mask's edge score, the object goes back to
        ``state`` (its mask ``before``) and the undo history to ``history``, as if the click
        had not been made, and :attr:`rule_note` says why. Returns whether it did."""
        slices, block = before
        if slices is None or block is None or obj.slices is None or obj.block is None:
            return False
        volume = self.predictor.require_image()
        image, sp = volume.array, volume.spacing
        cached = self._edge_scores.get(obj.label)
        old = cached[1] if cached is not None and cached[0] is block else None
        if old is None:
            old = mask_edge_score(image, slices, block, spacing=sp)
        new = mask_edge_score(image, obj.slices, obj.block, spacing=sp)
        click = obj.state.clicks[-1]
        if not later_click_refused(old, new, click.positive):
            self._edge_scores[obj.label] = (obj.block, new)
            return False
        grown = int(np.count_nonzero(obj.block))
        obj.state, obj.slices, obj.block = state, slices, block
        self._undo, self._redo = history
        self._edge_scores[obj.label] = (block, old)
        sign = "positive" if click.positive else "negative"
        had = int(np.count_nonzero(block))
        if old > 0:
            score = f"has {new / old:.0%} of the edge score of the mask before it ({had} voxels)"
        else:
            score = f"has edge score {new:.3g}, the mask before it ({had} voxels) {old:.3g}"
        self._tell(
            obj.label,
            "edge check",
            f"the {sign} click at {click.coord} was not taken: the mask it gave ({grown} "
            f"voxels) {score}; the mask is as it was and the click is not kept (click "
            "elsewhere, or switch the edge check off)",
        )
        return True

    def _tell(self, label: int, rule: str, text: str) -> None:
        """Say what ``rule`` (one of :data:`RULES`) did to object ``label`` at this click."""
        self.rule, self.rule_note = rule, f"{rule}: {text}"
        logger.debug("object %d: %s", label, self.rule_note)

    def _extent_key(self, label: int | None) -> tuple[tuple[Any, ...], _ObjectState]:
        if label is None:
            label = self._current
            if label is None:
                raise ValueError("no object: click first, then ask for other extents")
        label = self._check_label(label)
        if label not in self._objects:
            raise ValueError(f"no object {label}; existing: {sorted(self._objects)}")
        state = self._objects[label].state
        if len(state.clicks) != 1 or not state.tiles:
            raise ValueError(
                f"other extents are offered after an object's first click only; object "
                f"{label} has {len(state.clicks)} click(s)"
            )
        return (label, state.clicks[0], state.roi), state

    def _compute_extents(
        self, state: _ObjectState, obj: _Object | None = None
    ) -> tuple[list[Tile], list[int], list[float], list[_Block]]:
        """First-click masks of ``state`` (duplicates and empty masks dropped, the current
        one and the model's pick kept), smallest first, with their native voxel counts,
        scores and native ``(slices, block)`` on their own ROI. ``obj``: the object whose
        state it is; when its mask is one tile's, that extent's mask is taken from it."""
        pred = self.predictor
        click = state.clicks[0]
        roi = (
            state.roi if state.roi is not None else pred.lattice.roi_at(click.coord, pred.roi_size)
        )
        points = np.asarray([click.coord], dtype=np.int64)
        found = pred.first_click_extents(roi, points, np.ones(1, np.int64), zoom=state.roi is None)
        prompted = state.tiles[state.active] if state.active is not None else None
        shown = [t for t in (prompted, state.first_pick) if t is not None]
        # the current mask and the model's pick first, then by score: duplicates of a kept
        # mask are dropped
        order = sorted(
            range(len(found)),
            key=lambda n: (not any(_same_tile(found[n][0], t) for t in shown), -found[n][1]),
        )
        own = None  # the object's mask when it is a single tile's (stitched and refined alike)
        if obj is not None and obj.block is not None and len(state.tiles) == 1:
            own = (state.tiles[0], obj.slices, obj.block)
        kept: list[tuple[Tile, float, tuple[slice, ...], np.ndarray]] = []
        for n in order:
            tile, score = found[n]
            if own is not None and _same_tile(tile, own[0]):
                slices, block = own[1], own[2]
            else:
                slices, block = pred.native_block([tile], points, np.ones(1, np.int64))
            if not block.any() and not any(_same_tile(tile, t) for t in shown):
                continue  # an empty mask is no extent to offer
            if any(
                _block_dice((slices, block), (k[2], k[3])) >= EXTENT_DUPLICATE_DICE for k in kept
            ):
                continue
            kept.append((tile, score, slices, block))
        kept.sort(key=lambda k: int(np.count_nonzero(k[3])))
        return (
            [k[0] for k in kept],
            [int(np.count_nonzero(k[3])) for k in kept],
            [k[1] for k in kept],
            [(k[2], k[3]) for k in kept],
        )

    def _prompts(self, clicks: Sequence[Click], click: Click) -> tuple[np.ndarray, np.ndarray]:
        """Native voxels ``(N, 3)`` and labels ``(N,)`` of the prompts of a step: every click
        of the object with ``accumulate_clicks``, else the new one."""
        chosen = clicks if self.accumulate_clicks else [click]
        points = np.asarray([c.coord for c in chosen], dtype=np.int64)
        return points, np.asarray([int(c.positive) for c in chosen], dtype=np.int64)

    def _tile_for(self, tiles: Sequence[Tile], voxel: np.ndarray) -> int | None:
        """Index of the tile holding the ``(1, 3)`` native voxel deepest inside its ROI."""
        best, best_margin = None, -1.0
        for n, tile in enumerate(tiles):
            r = tile.roi.native_points_to_voxels(voxel)[0]
            size = np.asarray(tile.roi.size)
            if np.any(r < 0) or np.any(r > size - 1):
                continue
            margin = float(np.min(np.minimum(r, size - 1 - r)))
            if margin > best_margin:
                best, best_margin = n, margin
        return best

    # ------------------------------------------------------------------------------------
    # history

    def undo(self) -> bool:
        """Revert the last change (click, new object, ROI choice). False if none is left."""
        if not self._undo:
            return False
        action = self._undo.pop()
        self._set_state(action.label, action.before)
        self._redo.append(action)
        self.rule = self.rule_note = None  # it told of the click undone
        return True

    def redo(self) -> bool:
        """Re-apply the last undone change. False if none is left."""
        if not self._redo:
            return False
        action = self._redo.pop()
        self._set_state(action.label, action.after)
        self._undo.append(action)
        self.rule = self.rule_note = None
        return True

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    # ------------------------------------------------------------------------------------
    # results

    @property
    def mask(self) -> np.ndarray:
        """The current object's ``(I, J, K)`` bool mask (all False if there is none)."""
        volume = self.predictor.volume
        out = np.zeros(volume.shape, dtype=bool)
        if self._current is not None:
            obj = self._objects[self._current]
            if obj.slices is not None and obj.block is not None:
                out[obj.slices] = obj.block
        return out

    def voxel_count(self, label: int | None = None) -> int:
        """Voxels in an object's mask (default: the current object's; 0 if there is none).

        Counted on the object's stitched block, without building the full-size mask.

        Raises:
            ValueError: no object ``label``.
        """
        obj = self._object_or_none(label)
        return 0 if obj is None or obj.block is None else int(np.count_nonzero(obj.block))

    def contains(self, voxel: Sequence[int], label: int | None = None) -> bool:
        """Whether a native voxel ``(i, j, k)`` is in an object's mask (default: the current
        object's; False if there is none), read from its block without a full-size mask.

        Raises:
            ValueError: no object ``label``; ``voxel`` is not three whole numbers.
        """
        if len(voxel) != 3 or not all(float(v).is_integer() for v in voxel):
            raise ValueError(f"voxel must be three whole numbers (i, j, k), got {tuple(voxel)}")
        obj = self._object_or_none(label)
        if obj is None or obj.block is None or obj.slices is None:
            return False
        at = tuple(int(v) - sl.start for v, sl in zip(voxel, obj.slices, strict=True))
        inside = all(0 <= a < n for a, n in zip(at, obj.block.shape, strict=True))
        return inside and bool(obj.block[at])

    def _object_or_none(self, label: int | None) -> _Object | None:
        """Object ``label``, or the current one (None when there is none).

        Raises:
            ValueError: no object ``label``.
        """
        if label is None:
            return None if self._current is None else self._objects[self._current]
        if label not in self._objects:
            raise ValueError(f"no object {label}; existing: {sorted(self._objects)}")
        return self._objects[label]

    @property
    def clicks(self) -> tuple[Click, ...]:
        """The current object's clicks, in order."""
        if self._current is None:
            return ()
        return self._objects[self._current].state.clicks

    @property
    def roi(self) -> RoiGrid | None:
        """ROI of the current object's last click (or the ROI set for its first click)."""
        if self._current is None:
            return None
        state = self._objects[self._current].state
        if state.active is not None:
            return state.tiles[state.active].roi
        return state.roi

    @property
    def low_res_logits(self) -> torch.Tensor | None:
        """``(1, 1, l, l, l)`` logits of the current object's last click (its mask prompt)."""
        if self._current is None:
            return None
        state = self._objects[self._current].state
        return None if state.active is None else state.tiles[state.active].low_res_logits

    @property
    def tiles(self) -> tuple[Tile, ...]:
        """All ROI predictions of the current object."""
        if self._current is None:
            return ()
        return self._objects[self._current].state.tiles

    def object_mask(self, label: int) -> np.ndarray:
        """The ``(I, J, K)`` bool mask of object ``label``."""
        if label not in self._objects:
            raise ValueError(f"no object {label}; existing: {sorted(self._objects)}")
        out = np.zeros(self.predictor.volume.shape, dtype=bool)
        obj = self._objects[label]
        if obj.slices is not None and obj.block is not None:
            out[obj.slices] = obj.block
        return out

    @property
    def label_map(self) -> np.ndarray:
        """``(I, J, K)`` label map: uint8 (uint16 for labels > 255); 0 is background.

        Where objects overlap, the session's ``overlap`` rule decides (default: the object
        created later is on top). :meth:`make_label_map` takes the rule as an argument.
        """
        return self.make_label_map()

    def make_label_map(self, overlap: str | None = None) -> np.ndarray:
        """The label map under an overlap rule (default: the session's ``overlap``).

        Args:
            overlap: ``"later-on-top"`` or ``"earlier-kept"``.

        Returns:
            ``(I, J, K)`` uint8 (uint16 for labels > 255) label map, 0 for background.
        """
        rule = self.overlap if overlap is None else _check_overlap(overlap)
        labels = list(self._objects)
        dtype = np.uint16 if labels and max(labels) > 255 else np.uint8
        out = np.zeros(self.predictor.volume.shape, dtype=dtype)
        for label in labels if rule == "later-on-top" else reversed(labels):
            obj = self._objects[label]
            if obj.slices is None or obj.block is None:
                continue
            region = out[obj.slices]
            region[obj.block] = label
        return out

    def overlap_report(self, label_map: np.ndarray | None = None) -> dict[int, tuple[int, int]]:
        """``{label: (voxels of the object's mask, voxels it keeps in the label map)}``.

        Args:
            label_map: The label map to check (default: :attr:`label_map`).
        """
        lm = self.label_map if label_map is None else label_map
        report = {}
        for label, obj in self._objects.items():
            if obj.slices is None or obj.block is None:
                report[label] = (0, 0)
                continue
            own = int(np.count_nonzero(obj.block))
            kept = int(np.count_nonzero(lm[obj.slices][obj.block] == label))
            report[label] = (own, kept)
        return report

    def export_label_map(
        self,
        path: str | os.PathLike[str],
        *,
        protect: Sequence[str | os.PathLike[str]] = (),
        overlap: str | None = None,
        overwrite: bool = False,
    ) -> Path:
        """Write the label map with the image's exact geometry (atomic).

        The format follows the file name (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``); the
        image's own file is never overwritten; a file read from NIfTI or NRRD keeps its
        header's position fields (:func:`sammed3d.io.write_volume`). A warning is logged for
        every object that is empty or keeps less than half of its voxels under the overlap
        rule (another object covers it).

        Args:
            path: Output file.
            protect: More paths that must not be overwritten.
            overlap: Overlap rule (default: the session's ``overlap``).
            overwrite: Replace an existing ``path``; by default an existing file is refused
                (an image set from an array has no file the session could protect: a trial's
                export over its own T1 replaced the scan). The image's own file and
                ``protect`` are refused either way.

        Raises:
            VolumeError: an ending that is no volume format, or ``path`` is the image's file or
                one of ``protect``.
            FileExistsError: ``path`` exists and ``overwrite`` is False.
        """
        volume = self.predictor.volume
        guard = list(protect) + ([volume.path] if volume.path is not None else [])
        rule = self.overlap if overlap is None else _check_overlap(overlap)
        # the path first: a refused file must not come after warnings about its content
        check_volume_name(path)
        check_output_file(path, overwrite=overwrite, protect=guard)
        label_map = self.make_label_map(rule)
        for label, (own, kept) in self.overlap_report(label_map).items():
            if own == 0:
                logger.warning("warning: object %d is empty (0 voxels) in %s", label, path)
            elif kept < HIDDEN_WARNING_SHARE * own:
                logger.warning(
                    "warning: object %d keeps %d of its %d voxels in %s; other objects cover "
                    "the rest (overlap rule %r; the other rule: %r)",
                    label,
                    kept,
                    own,
                    path,
                    rule,
                    next(r for r in OVERLAP_RULES if r != rule),
                )
        return write_volume(
            volume.with_array(label_map), path, protect=tuple(guard), overwrite=overwrite
        )

    # ------------------------------------------------------------------------------------
    # internals

    @staticmethod
    def _check_label(label: int) -> int:
        if isinstance(label, bool) or not isinstance(label, int | np.integer):
            raise ValueError(f"label must be an integer in 1..{MAX_LABEL}, got {label!r}")
        if not 1 <= int(label) <= MAX_LABEL:
            raise ValueError(f"label must be in 1..{MAX_LABEL}, got {label}")
        return int(label)

    def _current_or_new(self) -> _Object:
        if self._current is None:
            self.new_object()
        assert self._current is not None
        return self._objects[self._current]

    def _record(self, action: _Action) -> None:
        self._undo.append(action)
        del self._undo[: max(0, len(self._undo) - self.max_history)]
        self._redo.clear()

    def _apply(self, obj: _Object, state: _ObjectState) -> None:
        """Make ``state`` the object's state, as an undoable action."""
        self._record(_Action(obj.label, obj.state, state))
        self._set_state(obj.label, state)

    def _set_state(self, label: int, state: _ObjectState | None) -> None:
        if state is None:
            self._objects.pop(label, None)
            if self._current == label:
                self._current = next(reversed(self._objects), None) if self._objects else None
            return
        obj = self._objects.get(label)
        if obj is None:
            obj = self._objects[label] = _Object(label)
        obj.state = state
        if state.tiles:
            points = np.asarray([c.coord for c in state.clicks], dtype=np.int64).reshape(-1, 3)
            labels = np.asarray([int(c.positive) for c in state.clicks], dtype=np.int64)
            if state.bound is not None and state.bound.exact:  # the pinned mask, as it was
                obj.slices, obj.block = state.bound.slices, state.bound.block()
            else:
                obj.slices, obj.block = self.predictor.native_block(state.tiles, points, labels)
                if state.bound is not None:
                    obj.slices, obj.block = state.bound.apply(obj.slices, obj.block)
        else:
            obj.slices, obj.block = None, None
        self._current = label


def _edge_pick_reason(
    own_score: float, new_score: float, own_like: bool, new_like: bool
) -> tuple[str, str, str]:
    """The words of the edge pick's note: why the model's mask gave way, what replaced it,
    and the scores (:func:`~sammed3d.inference.contrast.edge_pick`'s two reasons: an inside
    unlike the clicked voxels, whatever the edges, or a weaker edge)."""
    if not own_like and new_like:
        why, other = "its inside is unlike the clicked voxels", "one like them"
    else:
        why = "its border follows no intensity edge" if own_score == 0 else ""
        other = "a sharper one"
    better = (
        f"edge score {new_score / own_score:.1f}x the model's mask's"
        if own_score > 0 and new_score >= own_score
        else f"edge score {new_score:.3g}, the model's mask's {own_score:.3g}"
    )
    return why, other, better


def _on_rim(obj: _Object, voxel: np.ndarray) -> bool:
    """Whether native ``voxel`` lies outside ``obj``'s mask, within
    :data:`RIM_DISTANCE_VOXELS` native voxels of one of its voxels."""
    if obj.slices is None or obj.block is None:
        return False
    lo = np.asarray([s.start for s in obj.slices], dtype=np.int64)
    rel = np.asarray(voxel, dtype=np.int64) - lo
    shape = np.asarray(obj.block.shape)
    if ((rel >= 0) & (rel < shape)).all() and obj.block[tuple(rel)]:
        return False
    reach = int(math.floor(RIM_DISTANCE_VOXELS))
    a = np.maximum(rel - reach, 0)
    b = np.minimum(rel + reach + 1, shape)
    if not (b > a).all():
        return False
    near = np.argwhere(obj.block[tuple(slice(x, y) for x, y in zip(a, b, strict=True))]) + a
    if not len(near):
        return False
    return bool(np.sqrt(((near - rel) ** 2).sum(axis=1)).min() <= RIM_DISTANCE_VOXELS)


def _same_tile(a: Tile, b: Tile) -> bool:
    """Whether two tiles hold the same prediction (same ROI, equal low-res logits)."""
    return a.roi == b.roi and torch.equal(a.low_res_logits, b.low_res_logits)


def _block_dice(
    a: tuple[tuple[slice, ...], np.ndarray], b: tuple[tuple[slice, ...], np.ndarray]
) -> float:
    """Dice of two native masks given as ``(slices, block)`` (:meth:`native_block`)."""
    from sammed3d.evaluation.metrics import dice

    lo = [min(x.start, y.start) for x, y in zip(a[0], b[0], strict=True)]
    hi = [max(x.stop, y.stop) for x, y in zip(a[0], b[0], strict=True)]
    shape = [h - o for o, h in zip(lo, hi, strict=True)]
    canvas = [np.zeros(shape, dtype=bool) for _ in (a, b)]
    for c, (slices, block) in zip(canvas, (a, b), strict=True):
        c[tuple(slice(s.start - o, s.stop - o) for s, o in zip(slices, lo, strict=True))] = block
    score = dice(canvas[0], canvas[1])
    return 1.0 if math.isnan(score) else score  # two empty masks are the same


def _check_overlap(rule: str) -> str:
    if rule not in OVERLAP_RULES:
        raise ValueError(f"overlap must be one of {list(OVERLAP_RULES)}, got {rule!r}")
    return rule
