"""The model in the evaluation harness, through the same ``InteractiveSession`` users run."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from sammed3d.clicks import Click
from sammed3d.evaluation.predictors import bbox_center
from sammed3d.inference.predictor import SamMed3DPredictor
from sammed3d.inference.session import InteractiveSession
from sammed3d.io import Volume

logger = logging.getLogger(__name__)


class SessionPredictor:
    """Adapts :class:`~sammed3d.inference.session.InteractiveSession` to the harness.

    Every target is one fresh object of the session (``reset`` + ``new_object``); clicks go
    through :meth:`InteractiveSession.add_point` exactly as a user's clicks, and the returned
    native mask is what gets scored. With ``roi_mask`` (``--roi gt``) the object's ROI is
    placed by :meth:`InteractiveSession.set_roi_from_mask`, the published centring on the
    ground-truth bounding box; otherwise the session centres it on the first click.

    Args:
        session: The session (its predictor's ``extend``/``max_rois`` and the session's
            ``accumulate_clicks`` apply).
        name: Method name recorded in the outputs.

    Example:
        >>> predictor = SessionPredictor.from_checkpoint("sam_med3d_turbo.pth", device="cuda")
        >>> evaluate_targets(predictor, targets, "eval_out")
    """

    uses_gt = False

    def __init__(self, session: InteractiveSession, *, name: str = "sam_med3d") -> None:
        if not isinstance(session, InteractiveSession):
            raise TypeError(f"expected an InteractiveSession, got {type(session).__name__}")
        self.session = session
        self.name = name

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | os.PathLike[str] | None = None,
        *,
        device: str = "cpu",
        allow_unsafe_pickle: bool = False,
        accumulate_clicks: bool | None = None,
        **predictor_kwargs: Any,
    ) -> SessionPredictor:
        """Load a checkpoint into a predictor and a session.

        Args:
            checkpoint: Checkpoint file (None: the default checkpoint, see
                :func:`sammed3d.paths.require_checkpoint`).
            device: Where to run the model.
            allow_unsafe_pickle: See :func:`sammed3d.load_checkpoint`.
            accumulate_clicks: Give the model every click of the object at each step (current
                MedIM scripts) instead of only the newest one (legacy ``validation.py`` and
                training). None: what the model was trained with.
            **predictor_kwargs: Passed to :class:`SamMed3DPredictor` (e.g. ``extend=False``).
        """
        predictor = SamMed3DPredictor.from_checkpoint(
            checkpoint, device, allow_unsafe_pickle=allow_unsafe_pickle, **predictor_kwargs
        )
        return cls(InteractiveSession(predictor, accumulate_clicks=accumulate_clicks))

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
        }

    def set_image(self, image: Volume, *, modality: str | None = None) -> None:
        self.session.set_image(image, modality=modality)

    def start_target(self, *, roi_mask: np.ndarray | None, gt: np.ndarray | None = None) -> None:
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
        return self.session.add_point(click.coord, positive=click.positive)


__all__ = ["SessionPredictor"]
