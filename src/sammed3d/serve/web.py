"""One browser tab's session behind the web page: a volume, objects, clicks in millimetres.

The page (``static/app.js``, NiiVue) shows the image the server hands it
(:meth:`WebSession.image_nifti`, written from the server's own
:class:`~sammed3d.io.Volume`, so both sides agree on the geometry) and sends each click as
RAS+ millimetres, the world coordinates NiiVue reports. The server maps them to native
voxel indices with the inverse of the image's affine (:meth:`WebSession.mm_to_index`);
NiiVue's own voxel coordinates are not used because they live in its RAS-reoriented grid.
Replies are :class:`~sammed3d.serve.patch.Patch` es of the label map.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import re
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sammed3d.data.dataset_json import KNOWN_MODALITIES, check_modality
from sammed3d.inference.geometry import nearest_index
from sammed3d.inference.predictor import SamMed3DPredictor, normalise_modality, read_modality
from sammed3d.inference.session import Extent, InteractiveSession
from sammed3d.inference.validation import load_image
from sammed3d.io import (
    VOLUME_SUFFIXES,
    IrregularSlices,
    Volume,
    VolumeError,
    volume_suffix,
    world_extent,
)
from sammed3d.serve.images import check_decoded_size, check_nbytes
from sammed3d.serve.patch import Patch, Slices, diff, union
from sammed3d.serve.protocol import SessionClosed, finite_triple

logger = logging.getLogger(__name__)

#: Objects the page can hold (its overlay is uint8).
MAX_WEB_OBJECTS = 255
#: Where a modality came from (``info()["modality_source"]``).
MODALITY_SOURCES = ("chosen", "server", "file")


def check_web_modality(value: object) -> str | None:
    """A modality chosen on the page (``"CT"``, ``"mr"``, ``"MRI"``...) in canonical form
    (:func:`~sammed3d.data.dataset_json.check_modality`); None or ``""`` (not chosen: the
    server's ``--modality``, else the file's metadata) give None.

    Raises:
        ValueError: not a string, or not a known modality (one line naming the allowed values).
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return check_modality(value)
    except ValueError as exc:
        raise ValueError(f"{exc}; or empty for the server's default") from None


def parse_mm(mm: object) -> tuple[float, float, float]:
    """A click's RAS+ millimetres ``(x, y, z)`` from JSON (:func:`finite_triple`'s rules).

    Raises:
        ValueError: not three finite numbers (one line saying what came).
    """
    return finite_triple(mm, "mm", "the click's RAS+ x, y, z in millimetres")


@dataclass(frozen=True, eq=False)
class ClickResult:
    """What a click did: the voxel it landed on and the label-map change."""

    voxel: tuple[int, int, int]
    change: Patch | None


class WebSession:
    """Server-side state of one web page.

    Args:
        predictor: A predictor of its own (the model may be shared).
        compute_lock: Held while the model runs (shared by all sessions).
        modality: Default modality (``"CT"`` clamps): the server's ``--modality``; a modality
            chosen on the page overrides it; without either, the file's metadata.
        max_image_bytes: Largest decoded image accepted (``--max-upload-mb``), checked from
            the file's header before its voxels are read.
        irregular_slices: A DICOM series with uneven slice gaps: ``"error"`` or
            ``"resample"`` (:func:`sammed3d.io.read_volume`; ``serve --irregular-slices``).
    """

    def __init__(
        self,
        predictor: SamMed3DPredictor,
        *,
        compute_lock: threading.Lock,
        modality: str | None = None,
        max_image_bytes: int | None = None,
        irregular_slices: IrregularSlices = "error",
    ) -> None:
        self.predictor = predictor
        self.session = InteractiveSession(predictor)
        self.compute_lock = compute_lock
        self.modality = normalise_modality(modality)
        self.max_image_bytes = max_image_bytes
        self.irregular_slices: IrregularSlices = irregular_slices
        self.closed = False
        self.name: str | None = None
        self.modality_source: str | None = None  # one of MODALITY_SOURCES, or None
        self._held: Patch | None = None
        self._footprint: Slices | None = None  # every voxel any object ever covered

    # ------------------------------------------------------------------------------------
    # image

    def open_path(
        self,
        path: str | os.PathLike[str],
        name: str | None = None,
        modality: str | None = None,
    ) -> dict[str, Any]:
        """Load a volume file (NIfTI, NRRD, MHA/MHD, DICOM folder); returns :meth:`info`.

        Args:
            path: The file or DICOM folder.
            name: How the page names it (default: the file name).
            modality: Chosen on the page (:func:`check_web_modality`); None: the server's
                default, else the file's metadata.

        Raises:
            FileNotFoundError: no such file.
            ImageTooLarge: it decodes to more than ``max_image_bytes`` (checked from the
                header before the voxels are read; HTTP 413).
            VolumeError: unreadable or unusable image.
            ValueError: an unknown modality.
        """
        self._check_open()
        chosen = check_web_modality(modality)
        limit = self.max_image_bytes
        if limit is not None:
            check_decoded_size(path, limit)
        volume = load_image(path, irregular_slices=self.irregular_slices)
        if limit is not None:  # a header that could not be read ahead: the voxels now
            shape = " x ".join(str(n) for n in volume.shape)
            what = f"{shape} {volume.array.dtype}"
            check_nbytes(volume.array.nbytes, limit, name=str(path), what=what)
        source: str | None
        if chosen is not None:
            used, source = chosen, "chosen"
        elif self.modality is not None:
            used, source = self.modality, "server"
        else:
            # a header's code the page could not choose (``"OT"``, ``"NM"``) is not a clamp
            # setting: only the known ones are taken
            found = read_modality(path)
            used = found if found in KNOWN_MODALITIES else None
            source = "file" if used is not None else None
        self.session.set_image(volume, modality=used)
        self.modality_source = source
        self.name = name or Path(path).name
        self._held = None
        self._footprint = None
        return self.info()

    def open_bytes(self, data: bytes, filename: str, modality: str | None = None) -> dict[str, Any]:
        """Load an uploaded file (its name gives the format); returns :meth:`info`.

        Messages name the file as ``filename`` (the client's name), never the server's
        temporary copy.

        Raises:
            ImageTooLarge: decodes to more than ``max_image_bytes`` (HTTP 413).
            VolumeError: an ending that cannot be uploaded; an unreadable or unusable image.
            ValueError: an unknown modality.
        """
        self._check_open()
        shown = Path(filename.replace("\\", "/")).name or "upload"
        suffix = volume_suffix(shown)
        if suffix in ("", ".mhd", ".nhdr"):
            raise VolumeError(
                f"cannot open {shown!r}: upload one file ending in .nii.gz, .nii, "
                ".nrrd or .mha (headers with separate data files cannot be uploaded)"
            )
        check_web_modality(modality)
        with tempfile.TemporaryDirectory(prefix="sammed3d-upload-") as tmp:
            path = Path(tmp) / _upload_name(shown, suffix)
            path.write_bytes(data)
            try:
                info = self.open_path(path, name=shown, modality=modality)
            except (OSError, ValueError) as exc:
                raise _renamed(exc, path, shown) from None
        self.volume.path = None  # the temporary file is gone
        return info

    @property
    def volume(self) -> Volume:
        """The open image (ValueError if none is open yet)."""
        if not self.predictor.is_image_set:
            raise ValueError("no volume is open: upload one or open a start-up volume first")
        return self.predictor.volume

    def info(self) -> dict[str, Any]:
        """Shape, spacing, RAS affine, modality, objects: what the page shows."""
        volume = self.volume
        extent_note = self._extent_note()
        return {
            "name": self.name,
            "shape": list(volume.shape),
            "spacing": [float(s) for s in volume.spacing],
            "affine": volume.affine.tolist(),
            "dtype": str(volume.array.dtype),
            "modality": self.predictor.modality,
            "modality_source": self.modality_source,
            "objects": list(self.session.labels),
            "current": self.session.current_label,
            "can_undo": self.session.can_undo,
            "can_redo": self.session.can_redo,
            "can_change_extent": extent_note is None,
            "extent_note": extent_note,
        }

    def extent_mm(self) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
        """The image's RAS+ extent in mm, ``((x0, x1), (y0, y1), (z0, z1))``: the box around
        its voxels' outer faces (a click there rounds to a voxel of the image).

        Raises:
            ValueError: no volume is open.
        """
        return world_extent(self.volume, self.volume.shape)

    def _extent_note(self) -> str | None:
        """None when "other extent" can be offered now, else why not (one line)."""
        if not self.predictor.offers_extents():
            return "this model gives one mask per click: there are no other extents"
        clicks = len(self.session.clicks)
        if self.session.current_label is None or clicks == 0:
            return "other extents come after an object's first click: click on a structure"
        if clicks != 1:
            return (
                f"other extents are offered after an object's first click only (this object "
                f"has {clicks} clicks; undo back to its first)"
            )
        try:
            with self.compute_lock:
                count = len(self.session.extents())
        except ValueError as exc:
            return str(exc)
        if count < 2:
            return "the model found only one mask for this click: there is no other extent"
        return None

    def image_nifti(self) -> bytes:
        """The image as a gzipped NIfTI with the server's geometry (qform = sform)."""
        self._check_open()
        volume = self.volume
        array = volume.array
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        elif array.dtype == np.int64 or array.dtype == np.uint64:
            array = array.astype(np.float32)
        return _nifti_bytes(array, volume.affine)

    def label_map_nifti(self) -> bytes:
        """The label map as a gzipped NIfTI with the input's exact geometry."""
        self._check_open()
        _ = self.volume
        with tempfile.TemporaryDirectory(prefix="sammed3d-labels-") as tmp:
            path = self.session.export_label_map(Path(tmp) / "labels.nii.gz")
            return path.read_bytes()

    def overlay_nifti(self) -> bytes:
        """The current label map as uint8 NIfTI on the :meth:`image_nifti` grid (overlay)."""
        self._check_open()
        _ = self.volume
        labels = self.session.label_map.astype(np.uint8)
        self._held = None
        change, self._held = diff(labels, None, self._region())
        del change
        return _nifti_bytes(labels, self.volume.affine, intent="label")

    # ------------------------------------------------------------------------------------
    # objects and clicks

    def mm_to_index(self, mm: Sequence[float]) -> np.ndarray:
        """RAS+ mm ``(x, y, z)`` -> continuous native index ``(i, j, k)`` (inverse affine).

        Raises:
            ValueError: not three finite numbers.
        """
        xyz = np.asarray(parse_mm(mm), dtype=np.float64)
        inv = np.linalg.inv(self.volume.affine)
        return inv[:3, :3] @ xyz + inv[:3, 3]

    def click(self, mm: Sequence[float], positive: bool = True) -> ClickResult:
        """A click at RAS+ millimetres on the current object (one is created if needed).

        Raises:
            ValueError: not three finite numbers; outside the image (one line giving the
                click in mm, its voxel and the image's extent in mm); a negative first
                click; a negative click outside the object's ROIs.
        """
        self._check_open()
        ijk = self.mm_to_index(mm)
        rounded = nearest_index(ijk).astype(np.int64)
        if np.any(rounded < 0) or np.any(rounded >= np.asarray(self.volume.shape)):
            x, y, z = parse_mm(mm)
            (x0, x1), (y0, y1), (z0, z1) = self.extent_mm()
            raise ValueError(
                f"click at ({x:.1f}, {y:.1f}, {z:.1f}) mm (RAS+) is outside the image (voxel "
                f"({', '.join(str(int(v)) for v in rounded)})): the image spans x "
                f"{x0:.1f} to {x1:.1f}, y {y0:.1f} to {y1:.1f}, z {z0:.1f} to {z1:.1f} mm"
            )
        # the predictor's one rounding (nearest voxel, ties up) and image check, before an
        # object is created for the click
        voxel = self.predictor.click_voxels(ijk)[0]
        if self.session.current_label is None and not positive:
            raise ValueError("the first click of an object must be positive (it places the ROI)")
        if self.session.current_label is None:
            self._new_object_checked()
        with self.compute_lock:
            click = self.session.add_click(voxel, positive=positive)
        return ClickResult(click.coord, self._sync())

    def new_object(self) -> int:
        """Start a new object (later clicks edit it); returns its label."""
        self._check_open()
        _ = self.volume
        return self._new_object_checked()

    def select_object(self, label: int) -> None:
        self._check_open()
        _ = self.volume
        self.session.select_object(label)

    def change_extent(
        self, step: int = 1, index: int | None = None
    ) -> tuple[Extent, tuple[Extent, ...], Patch | None]:
        """Give the current object's first click another of its masks: mask ``index`` of
        :meth:`InteractiveSession.extents` (smallest first), or ``step`` masks on (``-1``:
        the next smaller one, wrapping round); returns the extent taken, all of them, and the
        label-map change.

        Raises:
            ValueError: no object, more than one click, a model with one mask per click, a
                click with one mask only, an index out of range.
        """
        self._check_open()
        _ = self.volume
        with self.compute_lock:
            if len(self.session.extents()) < 2:
                raise ValueError(
                    "the model found only one mask for this click: there is no other extent"
                )
            if index is None:
                extent = self.session.next_extent(step=step)
            else:
                extent = self.session.choose_extent(index)
            found = self.session.extents()
        return extent, found, self._sync()

    def undo(self) -> Patch | None:
        self._check_open()
        _ = self.volume
        if not self.session.undo():
            raise ValueError("nothing to undo")
        return self._sync()

    def redo(self) -> Patch | None:
        self._check_open()
        _ = self.volume
        if not self.session.redo():
            raise ValueError("nothing to redo")
        return self._sync()

    def close(self) -> None:
        self.closed = True
        self._held = None
        if self.predictor.is_image_set:
            self.session.reset()
        self.predictor.reset_image()

    # ------------------------------------------------------------------------------------
    # internals

    def _new_object_checked(self) -> int:
        if len(self.session.labels) >= MAX_WEB_OBJECTS:
            raise ValueError(f"the web page holds at most {MAX_WEB_OBJECTS} objects")
        return self.session.new_object()

    def _region(self) -> Slices | None:
        boxes = [tile.roi.native_block(margin=1) for tile in self.session.tiles]
        self._footprint = union([self._footprint, *boxes])
        return self._footprint

    def _sync(self) -> Patch | None:
        labels = self.session.label_map
        change, self._held = diff(labels, self._held, self._region())
        if change is None:
            return None
        return Patch(change.slices, change.values.astype(np.uint8))

    def _check_open(self) -> None:
        if self.closed:
            raise SessionClosed("this session was released or expired")


def _upload_name(shown: str, suffix: str) -> str:
    """A safe file name for the temporary copy of an upload (the client's stem, its ending)."""
    stem = shown[: len(shown) - len(suffix)] if shown.lower().endswith(suffix) else shown
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", stem)[:80].strip(".") or "upload"
    return stem + suffix


def _renamed(exc: BaseException, path: Path, shown: str) -> BaseException:
    """``exc`` with every mention of the temporary copy ``path`` (and its folder) replaced by
    the client's file name ``shown``; the same type where it can be rebuilt from a message."""
    message = str(exc)
    folder = path.parent
    for where, what in (
        (os.path.realpath(path), shown),
        (str(path), shown),
        (os.path.realpath(folder), "(upload)"),
        (str(folder), "(upload)"),
    ):
        message = message.replace(where, what)
    if isinstance(exc, FileNotFoundError):
        return FileNotFoundError(message)
    if not isinstance(exc, ValueError):  # another OSError: the copy could not be read
        return VolumeError(f"cannot read {shown}: {message}")
    try:
        return type(exc)(message)
    except Exception:  # a ValueError subclass that takes other arguments
        return VolumeError(message)


def _nifti_bytes(array: np.ndarray, affine: np.ndarray, intent: str | None = None) -> bytes:
    """A ``.nii.gz`` in memory (gzip level 1: fast; qform and sform both set)."""
    import nibabel as nib

    image = nib.Nifti1Image(np.asarray(array), affine)
    if intent is not None:
        image.header.set_intent(intent)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    raw = image.to_bytes()
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1, mtime=0) as gz:
        gz.write(raw)
    return out.getvalue()


__all__ = [
    "MAX_WEB_OBJECTS",
    "MODALITY_SOURCES",
    "VOLUME_SUFFIXES",
    "ClickResult",
    "WebSession",
    "check_web_modality",
    "parse_mm",
]
