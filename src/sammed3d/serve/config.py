"""Settings of ``sammed3d serve`` (one frozen value, shared by the app and the CLI)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sammed3d.serve.orientation import DEFAULT_ORIENTATION, parse_orientation

if TYPE_CHECKING:
    from sammed3d.io import IrregularSlices

#: The string nnInteractive uses for "the weights' licence is unknown".
LICENSE_UNKNOWN = "!!MISSING!!"


@dataclass(frozen=True)
class ServeConfig:
    """Limits and behaviour of the server.

    Args:
        api_key: If set, every API request needs ``Authorization: Bearer <api_key>``.
        max_sessions: Leases held at once (nnInteractive clients and web pages together).
        idle_timeout: Seconds without a user action before a session is freed.
        liveness_timeout: Seconds without any request (heartbeats count) before a session
            is freed.
        sweep_interval: Seconds between checks for expired sessions.
        max_upload_bytes: Largest request body and largest decoded image (bytes).
        orientation: Orientation code assumed for protocol images without an affine
            (:mod:`sammed3d.serve.orientation`): ``"SPL"`` for 3D Slicer, ``"SAR"`` for
            napari with napari-nifti.
        modality: Default modality (``"CT"`` clamps to [-1000, 1000]).
        weights_license: The ``license`` reported in ``/capabilities``.
        model_name: Architecture name reported in ``/capabilities``.
        volumes: Files the web page offers to open (given at start-up).
        irregular_slices: What opening a DICOM series with uneven slice gaps does:
            ``"error"`` or ``"resample"`` (:func:`sammed3d.io.read_volume`).
        allowed_hosts: If set, requests whose ``Host`` header names another host get 400
            (a server bound to 127.0.0.1 thus cannot be reached through DNS rebinding from
            a web page of another site).
    """

    api_key: str | None = None
    max_sessions: int = 4
    idle_timeout: float = 600.0
    liveness_timeout: float = 60.0
    sweep_interval: float = 5.0
    max_upload_bytes: int = 2 * 1024**3
    orientation: str = DEFAULT_ORIENTATION
    modality: str | None = None
    weights_license: str = LICENSE_UNKNOWN
    model_name: str = "sam_med3d"
    volumes: tuple[Path, ...] = field(default_factory=tuple)
    irregular_slices: IrregularSlices = "error"
    allowed_hosts: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {self.max_sessions}")
        for name in ("idle_timeout", "liveness_timeout", "sweep_interval"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_upload_bytes < 1024:
            raise ValueError(f"max_upload_bytes must be >= 1024, got {self.max_upload_bytes}")
        object.__setattr__(self, "orientation", parse_orientation(self.orientation))
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key must not be empty (omit it to disable authentication)")
