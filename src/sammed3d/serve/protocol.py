"""One nnInteractive-protocol client's session: the server side of ``nninteractive-client``.

:class:`ProtocolSession` maps the calls of ``nnInteractiveRemoteInferenceSession`` (the
client of SlicerNNInteractive and napari-nninteractive) onto an
:class:`~sammed3d.InteractiveSession`:

=============================  ===========================================================
client call                    here
=============================  ===========================================================
``set_image(img, props)``      ``(1, A, B, C)`` array -> :class:`~sammed3d.io.Volume`
                               (:mod:`sammed3d.serve.orientation`), a fresh session
``set_target_buffer(buf)``     the client's mask buffer: shape must be ``(A, B, C)``;
                               the server remembers it is all zeros
``add_point_interaction``      a click (``include_interaction``: positive) at array index
                               ``(a, b, c)``, rounded; with ``run_prediction=False`` it is
                               queued and runs at the next ``predict`` or predicted click
``_predict``                   runs the queued clicks, one model step each (the published
                               one-click-per-step interaction)
``undo``                       reverts the last interaction (any depth, not just one)
``reset_interactions``         drops the object and the history; the image and its
                               embeddings stay
``set_do_autozoom``            ROI extension for objects larger than one ROI on/off
=============================  ===========================================================

Replies to predicting calls carry only the changed box of the mask (values 0/1 in the
client's buffer dtype), as :class:`~sammed3d.serve.patch.Patch`. A negative click where the
object has nothing to remove (before its first positive click, or outside every ROI of
the object) changes nothing; it is accepted and undoable, as in nnInteractive.
"""

from __future__ import annotations

import logging
import math
import numbers
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sammed3d.inference.geometry import CLICK_DECIMALS, nearest_index
from sammed3d.inference.predictor import SamMed3DPredictor, normalise_modality
from sammed3d.inference.session import InteractiveSession
from sammed3d.serve.orientation import DEFAULT_ORIENTATION, parse_orientation, protocol_volume
from sammed3d.serve.patch import Patch, diff, union

logger = logging.getLogger(__name__)

#: dtypes a target buffer may have (bool or integers, as nnInteractive accepts).
BUFFER_KINDS = ("b", "i", "u")


def finite_triple(value: object, name: str, meaning: str = "") -> tuple[float, float, float]:
    """Three finite real numbers from a JSON value (a list/tuple/array of three; booleans and
    strings are refused, as JSON's ``true`` or ``"1"`` is no coordinate).

    Args:
        value: what came (a decoded JSON value or an array).
        name: the field's name, for the message (``coordinates``, ``mm``).
        meaning: what the numbers are, appended to the message (``the click's ... mm``).

    Raises:
        ValueError: not three finite numbers (one line naming the field and what came).
    """
    values = value.tolist() if isinstance(value, np.ndarray) else value
    out: list[float] = []
    if isinstance(values, list | tuple) and len(values) == 3:
        for v in values:
            if not isinstance(v, numbers.Real) or isinstance(v, bool):
                break
            try:
                f = float(v)
            except OverflowError:  # an integer beyond float range
                break
            if not math.isfinite(f):
                break
            out.append(f)
    if len(out) != 3:
        what = f", {meaning}" if meaning else ""
        raise ValueError(f"{name} must be 3 finite numbers{what}, got {value!r}")
    return out[0], out[1], out[2]


class SessionClosed(RuntimeError):
    """The session was released or reaped while a request waited for it."""


@dataclass(frozen=True, eq=False)
class Reply:
    """Result of a predicting call: whether something ran, and the changed box if any."""

    ran: bool
    change: Patch | None = None


class ProtocolSession:
    """Server-side state of one ``nninteractive-client`` lease.

    Args:
        predictor: A predictor of its own (it holds the image and its embeddings); the
            model inside may be shared with other sessions.
        compute_lock: Held while the model runs, shared by all sessions (one forward pass
            at a time on a shared model).
        orientation: Orientation code assumed without an ``affine`` (see
            :mod:`sammed3d.serve.orientation`).
        modality: Default modality (``"CT"`` clamps); ``image_properties["modality"]``
            overrides it per image.
        max_buffer_bytes: Largest target buffer accepted.
    """

    def __init__(
        self,
        predictor: SamMed3DPredictor,
        *,
        compute_lock: threading.Lock,
        orientation: str = DEFAULT_ORIENTATION,
        modality: str | None = None,
        max_buffer_bytes: int = 2**31,
    ) -> None:
        self.predictor = predictor
        self.session = InteractiveSession(predictor)
        self.compute_lock = compute_lock
        self.orientation = parse_orientation(orientation)
        self.modality = normalise_modality(modality)
        self.max_buffer_bytes = int(max_buffer_bytes)
        self.do_autozoom = bool(predictor.extend)
        self.closed = False
        self._shape: tuple[int, int, int] | None = None
        self._buffer_dtype: np.dtype | None = None
        self._held: Patch | None = None
        self._pending: list[tuple[tuple[int, int, int], bool]] = []
        self._history: list[str] = []  # "click" (in the session), "noop", "pending"
        #: Seconds spent in the InteractiveSession and in the changed-box diff by the last
        #: call (reported in the ``Server-Timing`` header).
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------------------------
    # image and buffer

    def set_image(self, image: np.ndarray, properties: Mapping[str, Any] | None) -> list[int]:
        """Set a ``(1, A, B, C)`` image; returns its shape (``original_image_shape``).

        Raises:
            VolumeError: bad array or geometry (NaN, constant, label-like, 2-D...).
        """
        self._check_open()
        props = dict(properties or {})
        volume = protocol_volume(image, props, self.orientation)
        modality = props.get("modality")
        if modality is not None and not isinstance(modality, str):
            raise ValueError(f"image_properties.modality must be a string, got {modality!r}")
        self.session.set_image(volume, modality=modality or self.modality)
        self._shape = volume.shape
        self._buffer_dtype = None
        self._held = None
        self._pending.clear()
        self._history.clear()
        return list(image.shape)

    def set_target_buffer(self, shape: Sequence[Any], dtype: Any) -> None:
        """Declare the client's (all-zero) mask buffer.

        Raises:
            ValueError: no image yet, a shape other than the image's, a dtype other than
                bool/integer.
            MemoryError: larger than ``max_buffer_bytes``.
        """
        self._check_open()
        spatial = self._require_image()
        if not isinstance(shape, list | tuple) or not all(
            isinstance(d, int) and not isinstance(d, bool) for d in shape
        ):
            raise ValueError(f"target buffer shape must be a list of integers, got {shape!r}")
        if tuple(shape) != spatial:
            raise ValueError(
                f"target buffer shape {list(shape)} must equal the image's spatial shape "
                f"{list(spatial)}"
            )
        try:
            dt = np.dtype(dtype)
        except (TypeError, ValueError):
            raise ValueError(f"invalid target buffer dtype {dtype!r}") from None
        if dt.kind not in BUFFER_KINDS:
            raise ValueError(f"target buffer dtype must be bool or an integer type, got {dt}")
        if int(np.prod(spatial)) * dt.itemsize > self.max_buffer_bytes:
            raise MemoryError(f"target buffer of {list(shape)} {dt} exceeds this server's limit")
        self._buffer_dtype = dt
        self._held = None

    def set_do_autozoom(self, value: bool) -> None:
        """Turn ROI extension (the counterpart of nnInteractive's auto-zoom) on or off."""
        self._check_open()
        self.do_autozoom = bool(value)
        self.predictor.extend = self.do_autozoom

    def reset_interactions(self) -> None:
        """Forget the object, queued clicks and history (the client zeroes its buffer)."""
        self._check_open()
        if self.predictor.is_image_set:
            self.session.reset()
        self._held = None
        self._pending.clear()
        self._history.clear()

    # ------------------------------------------------------------------------------------
    # interactions

    def add_point(self, coordinates: Any, positive: bool, run_prediction: bool = True) -> Reply:
        """A click at array index ``(a, b, c)`` (rounded to the nearest voxel).

        Raises:
            ValueError: no image or target buffer, malformed or out-of-image coordinates.
        """
        self._check_open()
        self._require_buffer()
        point = self._check_point(coordinates)
        self._pending.append((point, bool(positive)))
        self._history.append("pending")
        if not run_prediction:
            return Reply(ran=False)
        return self._flush()

    def predict(self) -> Reply:
        """Run the queued clicks; ``ran`` is False when none was queued."""
        self._check_open()
        self._require_buffer()
        if not self._pending:
            return Reply(ran=False)
        return self._flush()

    def undo(self) -> Reply:
        """Revert the last interaction; ``ran`` False when there is none."""
        self._check_open()
        if not self._history:
            return Reply(ran=False)
        kind = self._history.pop()
        if kind == "pending":
            self._pending.pop()
            return Reply(ran=True)
        if kind == "noop":
            return Reply(ran=True)
        t0 = time.perf_counter()
        if not self.session.undo():  # dropped from the session's bounded history
            self._history.clear()
            return Reply(ran=False)
        self.timings = {"session": time.perf_counter() - t0}
        return Reply(ran=True, change=self._sync())

    def close(self) -> None:
        """Free the image, embeddings and masks (the lease is gone)."""
        self.closed = True
        self._pending.clear()
        self._history.clear()
        self._held = None
        self.session.reset()
        self.predictor.reset_image()

    # ------------------------------------------------------------------------------------
    # internals

    def _flush(self) -> Reply:
        n_pending = len(self._pending)
        start = len(self._history) - n_pending
        t0 = time.perf_counter()
        with self.compute_lock:
            for n, (point, positive) in enumerate(self._pending):
                if self.session.current_label is None:
                    self.session.new_object()
                try:
                    self.session.add_click(point, positive=positive)
                    self._history[start + n] = "click"
                except ValueError:
                    if positive:
                        del self._history[start + n :]
                        self._pending.clear()
                        raise
                    self._history[start + n] = "noop"  # nothing to remove there
        self._pending.clear()
        del self._history[: max(0, len(self._history) - (self.session.max_history - 1))]
        self.timings = {"session": time.perf_counter() - t0}
        return Reply(ran=True, change=self._sync())

    def _sync(self) -> Patch | None:
        """The changed box since the last reply, in the client's buffer dtype."""
        t0 = time.perf_counter()
        region = union(tile.roi.native_block(margin=1) for tile in self.session.tiles)
        change, self._held = diff(self.session.mask, self._held, region)
        self.timings["diff"] = time.perf_counter() - t0
        if change is None:
            return None
        assert self._buffer_dtype is not None
        return Patch(change.slices, change.values.astype(self._buffer_dtype))

    def _check_point(self, coordinates: Any) -> tuple[int, int, int]:
        shape = self._require_image()
        xyz = np.asarray(finite_triple(coordinates, "coordinates"), dtype=np.float64)
        voxel = nearest_index(xyz, CLICK_DECIMALS)
        if np.any(voxel < 0) or np.any(voxel > np.asarray(shape) - 1):
            # the client's terms: indices of the array it sent, in its axis order (the
            # predictor's message speaks of the file's native (i, j, k), which it never saw)
            shown = ", ".join(f"{v:g}" for v in xyz)
            ranges = " x ".join(f"[0, {n - 1}]" for n in shape)
            raise ValueError(
                f"point at ({shown}) is outside the image: coordinates index the image "
                f"array as sent, of shape {tuple(shape)}, and must lie in {ranges}"
            )
        # array indices are the native indices of the session's image: the predictor's one
        # rounding (nearest voxel, ties up) and image check, at queue time
        point = self.predictor.click_voxels(xyz)[0]
        return (int(point[0]), int(point[1]), int(point[2]))

    def _require_image(self) -> tuple[int, int, int]:
        if self._shape is None:
            raise ValueError("no image: call set_image first")
        return self._shape

    def _require_buffer(self) -> None:
        self._require_image()
        if self._buffer_dtype is None:
            raise ValueError("no target buffer: call set_target_buffer after set_image")

    def _check_open(self) -> None:
        if self.closed:
            raise SessionClosed("this session was released or expired")
