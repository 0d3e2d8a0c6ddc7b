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
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sammed3d.inference.predictor import SamMed3DPredictor, normalise_modality, read_modality
from sammed3d.inference.session import Extent, InteractiveSession
from sammed3d.inference.validation import load_image
from sammed3d.io import VOLUME_SUFFIXES, Volume, VolumeError, volume_suffix
from sammed3d.serve.patch import Patch, Slices, diff, union
from sammed3d.serve.protocol import SessionClosed

logger = logging.getLogger(__name__)

#: Objects the page can hold (its overlay is uint8).
MAX_WEB_OBJECTS = 255


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
        modality: Default modality (``"CT"`` clamps); else the file's metadata.
    """

    def __init__(
        self,
        predictor: SamMed3DPredictor,
        *,
        compute_lock: threading.Lock,
        modality: str | None = None,
    ) -> None:
        self.predictor = predictor
        self.session = InteractiveSession(predictor)
        self.compute_lock = compute_lock
        self.modality = normalise_modality(modality)
        self.closed = False
        self.name: str | None = None
        self._held: Patch | None = None
        self._footprint: Slices | None = None  # every voxel any object ever covered

    # ------------------------------------------------------------------------------------
    # image

    def open_path(self, path: str | os.PathLike[str], name: str | None = None) -> dict[str, Any]:
        """Load a volume file (NIfTI, NRRD, MHA/MHD, DICOM folder); returns :meth:`info`.

        Raises:
            FileNotFoundError, VolumeError: unreadable or unusable image.
        """
        self._check_open()
        volume = load_image(path)
        modality = self.modality or read_modality(path)
        self.session.set_image(volume, modality=modality)
        self.name = name or Path(path).name
        self._held = None
        self._footprint = None
        return self.info()

    def open_bytes(self, data: bytes, filename: str) -> dict[str, Any]:
        """Load an uploaded file (its name gives the format); returns :meth:`info`."""
        self._check_open()
        suffix = volume_suffix(filename)
        if suffix in ("", ".mhd", ".nhdr"):
            raise VolumeError(
                f"cannot open {Path(filename).name!r}: upload one file ending in .nii.gz, .nii, "
                ".nrrd or .mha (headers with separate data files cannot be uploaded)"
            )
        with tempfile.TemporaryDirectory(prefix="sammed3d-upload-") as tmp:
            path = Path(tmp) / f"upload{suffix}"
            path.write_bytes(data)
            info = self.open_path(path, name=Path(filename).name)
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
        return {
            "name": self.name,
            "shape": list(volume.shape),
            "spacing": [float(s) for s in volume.spacing],
            "affine": volume.affine.tolist(),
            "dtype": str(volume.array.dtype),
            "modality": self.predictor.modality,
            "objects": list(self.session.labels),
            "current": self.session.current_label,
            "can_undo": self.session.can_undo,
            "can_redo": self.session.can_redo,
            "can_change_extent": (
                len(self.session.clicks) == 1 and self.predictor.offers_extents()
            ),
        }

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
        """RAS+ mm ``(x, y, z)`` -> continuous native index ``(i, j, k)`` (inverse affine)."""
        xyz = np.asarray(mm, dtype=np.float64)
        if xyz.shape != (3,) or not np.isfinite(xyz).all():
            raise ValueError(f"mm must be 3 finite numbers (RAS+ x, y, z), got {mm!r}")
        inv = np.linalg.inv(self.volume.affine)
        return inv[:3, :3] @ xyz + inv[:3, 3]

    def click(self, mm: Sequence[float], positive: bool = True) -> ClickResult:
        """A click at RAS+ millimetres on the current object (one is created if needed).

        Raises:
            ValueError: outside the image; a negative first click; a negative click
                outside the object's ROIs.
        """
        self._check_open()
        ijk = self.mm_to_index(mm)
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
            ValueError: no object, more than one click, a model with one mask per click, an
                index out of range.
        """
        self._check_open()
        _ = self.volume
        with self.compute_lock:
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


__all__ = ["MAX_WEB_OBJECTS", "VOLUME_SUFFIXES", "ClickResult", "WebSession"]
