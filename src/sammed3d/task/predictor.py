"""Whole-volume prediction with a task model: sliding windows at 1.5 mm, labels in native space.

Steps (``docs/transfer.md``): the image is pre-processed as for training
(:mod:`sammed3d.task.preprocess`: resampled to the model's spacing, RAS, CT clamp, z-score of
the case), MONAI's ``sliding_window_inference`` runs the network over patches of the
encoder's input size (Gaussian blending, ``spec.sw_overlap``; an image smaller than a patch is
padded as training crops are, with the case's lowest intensity (``spec.padding``), and the
padding is dropped again), the class probabilities are resampled linearly onto the input's own
voxel grid (by physical position; outside the resampled grid: background), and the label of
each voxel is the most probable class. The result is a label map with the input's geometry:
label ``i + 1`` is ``spec.classes[i]``.

Example:
    >>> predictor = TaskPredictor.from_checkpoint("runs/brain/checkpoints/final.pth")
    >>> labels = predictor.predict(read_volume("ct.nii.gz"))      # Volume on the input grid
    >>> write_volume(labels, "labels.nii.gz")
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch

from sammed3d.io import Volume, VolumeError
from sammed3d.task.model import TaskModel
from sammed3d.task.preprocess import (
    normalise,
    padding_intensity,
    prepare_volume,
    zscore_stats,
)

logger = logging.getLogger(__name__)


class TaskPredictor:
    """Runs a :class:`~sammed3d.task.model.TaskModel` over whole volumes.

    Args:
        model: The task model (moved to ``device``, eval mode).
        device: Where the network runs.
        overlap: Sliding-window overlap (default: the checkpoint's ``sw_overlap``).
        sw_batch_size: Windows per forward pass.
    """

    def __init__(
        self,
        model: TaskModel,
        device: str | torch.device = "cpu",
        *,
        overlap: float | None = None,
        sw_batch_size: int = 1,
    ) -> None:
        from sammed3d.build import resolve_model_device

        self.device = resolve_model_device(device)
        self.model = model.to(self.device).eval()
        self.spec = model.spec
        self.overlap = self.spec.sw_overlap if overlap is None else float(overlap)
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be >= 1, got {sw_batch_size}")
        self.sw_batch_size = int(sw_batch_size)

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | os.PathLike[str],
        device: str | torch.device = "cpu",
        **kwargs: float | int | None,
    ) -> TaskPredictor:
        """Load a task checkpoint (file or training run folder).

        Raises:
            FileNotFoundError / sammed3d.build.CheckpointError: see
                :func:`sammed3d.task.checkpoint.load_task_checkpoint`.
        """
        from sammed3d.task.checkpoint import load_task_checkpoint

        return cls(load_task_checkpoint(checkpoint), device, **kwargs)  # type: ignore[arg-type]

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names; class ``i`` is label ``i + 1``."""
        return self.spec.classes

    def _modality(self, modality: str | None) -> str | None:
        return modality if modality is not None else self.spec.modality

    def predict_resampled(
        self, volume: Volume, *, modality: str | None = None
    ) -> tuple[Volume, np.ndarray]:
        """Class probabilities on the model's grid.

        Returns:
            ``(grid, probabilities)``: the resampled canonical volume (its geometry) and
            ``(N + 1, I, J, K)`` float32 softmax probabilities on it.

        Raises:
            VolumeError: ``volume`` is not a :class:`~sammed3d.io.Volume`.
        """
        from monai.inferers import sliding_window_inference

        _check_volume(volume)
        spec = self.spec
        prepared = prepare_volume(
            volume, spec.spacing, modality=self._modality(modality), ct_clamp=spec.ct_clamp
        )
        mean, std = zscore_stats(prepared.array)
        image = torch.from_numpy(normalise(prepared.array, mean, std))[None, None]
        raw = padding_intensity(prepared.array, spec.padding)
        background = float(normalise(np.array(raw), mean, std))
        size = spec.patch_size
        with torch.inference_mode():
            logits = sliding_window_inference(
                image.to(self.device),
                roi_size=(size, size, size),
                sw_batch_size=self.sw_batch_size,
                predictor=self.model,
                overlap=self.overlap,
                mode="gaussian",
                padding_mode="constant",
                cval=background,
            )
            probs = torch.softmax(torch.as_tensor(logits).float(), dim=1)[0]
        return prepared, probs.cpu().numpy()

    def predict(self, volume: Volume, *, modality: str | None = None) -> Volume:
        """Label map of ``volume`` on its own grid (uint8, or uint16 beyond 255 classes).

        Args:
            volume: The image (any orientation and spacing).
            modality: ``CT`` clamps intensities; default: the training modality recorded in
                the checkpoint.

        Returns:
            A :class:`~sammed3d.io.Volume` with ``volume``'s geometry (and source header, so
            :func:`sammed3d.io.write_volume` keeps the input's header fields).

        Raises:
            VolumeError: ``volume`` is not a :class:`~sammed3d.io.Volume`.
        """
        grid, probs = self.predict_resampled(volume, modality=modality)
        labels = probabilities_to_native(grid, probs, volume)
        dtype = np.uint8 if self.spec.num_classes < 256 else np.uint16
        return volume.with_array(labels.astype(dtype))


def _check_volume(volume: object) -> None:
    """Raise :class:`~sammed3d.io.VolumeError` unless ``volume`` is a Volume (an array or a
    path failed deep inside, as an AttributeError)."""
    if not isinstance(volume, Volume):
        from sammed3d._wording import kind_of

        raise VolumeError(
            "volume: expected a sammed3d.io.Volume (a file: sammed3d.io.read_volume(path); an "
            f"array: Volume(array, spacing)), got {kind_of(volume)}"
        )


def probabilities_to_native(grid: Volume, probs: np.ndarray, native: Volume) -> np.ndarray:
    """Most probable class per voxel of ``native`` from probabilities on ``grid``.

    Each channel is resampled linearly by physical position (SimpleITK) onto ``native``'s
    grid; voxels outside ``grid`` get background. Channels are processed one at a time
    (memory: two arrays of the native size besides the output).

    Returns:
        ``(I, J, K)`` int64 labels on the native grid.
    """
    import SimpleITK as sitk

    from sammed3d.io import to_sitk

    reference = sitk.Image([int(n) for n in native.shape], sitk.sitkUInt8)
    reference.SetSpacing(tuple(float(s) for s in native.spacing))
    reference.SetOrigin(tuple(float(o) for o in native.origin))
    reference.SetDirection(tuple(float(d) for d in native.direction.ravel()))
    best = np.full(native.shape, -1.0, dtype=np.float32)
    labels = np.zeros(native.shape, dtype=np.int64)
    for channel in range(probs.shape[0]):
        source = to_sitk(grid.with_array(np.ascontiguousarray(probs[channel], dtype=np.float32)))
        out = sitk.Resample(
            source,
            reference,
            sitk.Transform(),
            sitk.sitkLinear,
            1.0 if channel == 0 else 0.0,
            sitk.sitkFloat32,
        )
        p = sitk.GetArrayFromImage(out).transpose(2, 1, 0)
        better = p > best
        best[better] = p[better]
        labels[better] = channel
    return labels


__all__ = ["TaskPredictor", "probabilities_to_native"]
