"""Pre-processing of task models: the published steps applied to whole cases.

Training crops (``sammed3d.training.semantic_data``) and inference (``TaskPredictor``) go
through the same steps, so the network sees the same intensities in both:

1. resample to ``spec.spacing`` (linear; 1.5 mm as published) and reorient to RAS
   (``sammed3d.data.transforms.resample`` / ``to_canonical``, the training cache's order);
2. clamp CT to ``spec.ct_clamp`` (modality from metadata or the checkpoint, never the path);
3. z-score with the mean and standard deviation of the **case's** voxels > 0 (the published
   ``ZNormalization(masking_method=x > 0)``, computed once per case instead of per 128^3 crop,
   so that overlapping sliding windows see identical values);
4. **padding**: a training crop or an inference window that reaches beyond the image is filled
   with the case's lowest intensity (:func:`padding_intensity`: air in CT, the empty
   background of MR), so that it looks like what lies outside a patient and not like tissue
   (raw 0 is water in CT). Training labels the padded voxels "ignore": they count neither in
   the loss nor in the logged Dice, and inference drops them.
"""

from __future__ import annotations

import logging

import numpy as np

from sammed3d.io import Volume

logger = logging.getLogger(__name__)

#: How voxels beyond the image are filled (:func:`padding_intensity`). ``zero`` (raw 0) is the
#: rule of task checkpoints written before the rule was recorded in them.
PADDING_MODES = ("minimum", "zero")


def zscore_stats(array: np.ndarray) -> tuple[float, float]:
    """Mean and unbiased standard deviation of the voxels > 0 (float64 sums).

    A case without two distinct positive values cannot be z-scored; it gets mean 0 / std 1
    (left as is) with a warning instead of stopping a run.
    """
    values = np.asarray(array)[np.asarray(array) > 0].astype(np.float64)
    if values.size < 2:
        logger.warning("case has fewer than 2 voxels > 0: not z-scored")
        return 0.0, 1.0
    std = float(values.std(ddof=1))
    if not std > 0:
        logger.warning("the voxels > 0 of the case are all equal: only shifted")
        return float(values.mean()), 1.0
    return float(values.mean()), std


def prepare_volume(
    volume: Volume,
    spacing: tuple[float, float, float],
    *,
    modality: str | None,
    ct_clamp: tuple[float, float] | None,
) -> Volume:
    """Steps 1 and 2: resampled, canonical (RAS), CT-clamped float32 volume."""
    from sammed3d.data import transforms as T

    out = T.to_canonical(T.resample(volume, spacing=spacing, interpolation="linear"))
    array = np.asarray(out.array, dtype=np.float32)
    if modality == "CT" and ct_clamp is not None:
        array = T.ct_clamp(array, ct_clamp[0], ct_clamp[1])
    return out.with_array(np.ascontiguousarray(array))


def padding_intensity(array: np.ndarray, mode: str = "minimum") -> float:
    """Raw intensity (before the z-score) of the voxels beyond a case's image.

    Args:
        array: The pre-processed case (:func:`prepare_volume`: resampled, CT-clamped).
        mode: ``minimum``: the case's lowest value; ``zero``: 0.

    Raises:
        ValueError: an unknown ``mode``.
    """
    if mode not in PADDING_MODES:
        raise ValueError(f"padding must be one of {list(PADDING_MODES)}, got {mode!r}")
    values = np.asarray(array)
    if mode == "zero" or values.size == 0:
        return 0.0
    low = float(values.min())
    return low if np.isfinite(low) else 0.0


def normalise(array: np.ndarray, mean: float, std: float) -> np.ndarray:
    """Step 3: ``(array - mean) / std`` as float32."""
    return ((np.asarray(array, dtype=np.float32) - np.float32(mean)) / np.float32(std)).astype(
        np.float32, copy=False
    )


__all__ = ["PADDING_MODES", "normalise", "padding_intensity", "prepare_volume", "zscore_stats"]
