"""Click simulation: the one copy shared by training and evaluation.

Two strategies (docs/faithfulness.md §6.1):

* ``"random"``: a voxel drawn uniformly from the error region FN ∪ FP of the current
  prediction against the ground truth; the click is positive iff the voxel is a false
  negative. With no error, a uniform ground-truth voxel, positive. The first click (empty
  prediction) is therefore a uniform foreground voxel. This is the published protocol of the
  current scripts and of training (``get_next_click3D_torch_2``).
* ``"center"``: the RITM/EDT rule of the legacy ``validation.py`` (the paper's numbers): pad
  the FN and FP masks by one background voxel, take the Euclidean distance transform of each,
  let the larger maximum distance pick the click type (ties go to FP, as in the published
  code), and draw uniformly among the voxels of that type whose distance exceeds half of the
  overall maximum. The first click is thus an *interior* voxel of the object. With no error,
  the same rule is applied to the ground truth (a deep foreground voxel, positive).

Coordinates are voxel indices in the array's own axis order: native ``(i, j, k)`` indices for
a :class:`sammed3d.io.Volume` array, tensor-axis ``(d, h, w)`` for a model crop.

Example:
    >>> rng = np.random.default_rng(0)
    >>> pred = np.zeros(gt.shape, bool)
    >>> click = sample_next_click(pred, gt, strategy="center", rng=rng)
    >>> click.coord, click.positive
    ((12, 30, 17), True)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch

from sammed3d.data.transforms import bbox_slices

logger = logging.getLogger(__name__)

ClickStrategy = Literal["random", "center"]
CLICK_STRATEGIES: tuple[str, ...] = get_args(ClickStrategy)

#: Label of the padding click returned for samples with an empty ground truth.
PADDING_LABEL = -1

try:  # optional, faster multi-label EDT (the published code used it)
    import edt as _edt  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    _edt = None


@dataclass(frozen=True)
class Click:
    """One simulated or user click (the one click type: simulation, sessions, evaluation).

    Attributes:
        coord: Voxel index in the array's axis order (sessions: native ``(i, j, k)``).
        positive: True for a foreground (include) click, False for background (exclude).
    """

    coord: tuple[int, int, int]
    positive: bool = True

    @property
    def label(self) -> int:
        """Prompt-encoder label: 1 positive, 0 negative."""
        return int(self.positive)


def _as_bool_array(x: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """Binarise a bool/int/float mask (floats: > 0.5) into a NumPy bool array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == bool:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        return arr > 0.5
    if np.issubdtype(arr.dtype, np.integer):
        return arr != 0
    raise TypeError(f"{name} must be a bool, integer or float array, got dtype {arr.dtype}")


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> None:
    if gt.ndim != 3:
        raise ValueError(f"gt must be a 3-D mask, got shape {gt.shape}")
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt must have the same shape, got {pred.shape} and {gt.shape}")


def _uniform_voxel(mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int]:
    """A uniform random True voxel of a non-empty 3-D mask."""
    flat = np.flatnonzero(mask)
    idx = flat[rng.integers(flat.size)]
    i, j, k = np.unravel_index(idx, mask.shape)
    return (int(i), int(j), int(k))


def padded_edt(mask: np.ndarray, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Euclidean distance of each True voxel to the nearest False voxel or the array border.

    Equivalent to padding the mask by one False voxel on every side before the EDT (the
    published RITM rule), so objects touching the border are not treated as infinitely deep.
    Computed only inside the mask's bounding box, which gives identical values.

    Args:
        mask: ``(I, J, K)`` bool.
        spacing: Voxel size per axis (distances in mm); None for voxel units.

    Returns:
        ``(I, J, K)`` float64 distances, 0 outside the mask.
    """
    out = np.zeros(mask.shape, dtype=np.float64)
    box = bbox_slices(mask)
    if box is None:
        return out
    sub = np.pad(mask[box], 1, mode="constant", constant_values=False)
    sampling = None if spacing is None else tuple(float(s) for s in spacing)
    if _edt is not None:
        anis = sampling if sampling is not None else (1.0, 1.0, 1.0)
        dt = _edt.edt(sub, anisotropy=anis, black_border=True)
    else:
        from scipy.ndimage import distance_transform_edt

        dt = distance_transform_edt(sub, sampling=sampling)
    out[box] = dt[1:-1, 1:-1, 1:-1]
    return out


def _center_click(
    fn: np.ndarray,
    fp: np.ndarray,
    rng: np.random.Generator,
    spacing: Sequence[float] | None,
) -> Click:
    """The RITM/EDT click on the FN/FP masks (at least one non-empty)."""
    fn_dt = padded_edt(fn, spacing)
    fp_dt = padded_edt(fp, spacing)
    fn_max = float(fn_dt.max())
    fp_max = float(fp_dt.max())
    use_fn = fn_max > fp_max  # published rule: strict, so ties go to FP
    dt = fn_dt if use_fn else fp_dt
    max_dist = max(fn_max, fp_max)
    coord = _uniform_voxel(dt > max_dist / 2.0, rng)
    return Click(coord=coord, positive=bool(fn[coord]))


def sample_next_click(
    pred: np.ndarray | torch.Tensor,
    gt: np.ndarray | torch.Tensor,
    *,
    strategy: ClickStrategy = "random",
    rng: np.random.Generator | int | None = None,
    spacing: Sequence[float] | None = None,
) -> Click:
    """Simulate the next click from the current prediction and the ground truth.

    Args:
        pred: Current prediction ``(I, J, K)``: bool, integer (non-zero = foreground) or
            float (> 0.5 = foreground; threshold logits yourself). All False for the first click.
        gt: Ground truth ``(I, J, K)``, same shape and conventions.
        strategy: ``"random"`` (uniform over FN ∪ FP) or ``"center"`` (RITM/EDT interior click).
        rng: A NumPy Generator, a seed, or None (fresh entropy; not reproducible).
        spacing: Voxel size per axis in mm, used by ``"center"`` to measure distances
            physically (None: voxel units, as the published code on 1.5 mm isotropic data).

    Returns:
        The click, with ``coord`` in the arrays' axis order and ``positive`` = the voxel is a
        false negative (or, when the prediction is already perfect, a ground-truth voxel).

    Raises:
        ValueError: Empty ground truth, mismatched shapes, or an unknown strategy.
    """
    if strategy not in CLICK_STRATEGIES:
        raise ValueError(f"strategy must be one of {CLICK_STRATEGIES}, got {strategy!r}")
    pred_b = _as_bool_array(pred, "pred")
    gt_b = _as_bool_array(gt, "gt")
    _check_pair(pred_b, gt_b)
    if spacing is not None and len(spacing) != 3:
        raise ValueError(f"spacing must have 3 values, got {list(spacing)}")
    if not gt_b.any():
        raise ValueError("cannot simulate a click: the ground truth is empty")
    generator = np.random.default_rng(rng)

    fn = gt_b & ~pred_b
    fp = pred_b & ~gt_b
    has_error = bool(fn.any() or fp.any())
    if strategy == "random":
        if not has_error:
            return Click(coord=_uniform_voxel(gt_b, generator), positive=True)
        coord = _uniform_voxel(fn | fp, generator)
        return Click(coord=coord, positive=bool(fn[coord]))
    if not has_error:
        click = _center_click(gt_b, np.zeros_like(gt_b), generator, spacing)
        return Click(coord=click.coord, positive=True)
    return _center_click(fn, fp, generator, spacing)


def _as_bool_tensor(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype == torch.bool:
        return x
    if x.is_floating_point():
        return x > 0.5
    return x != 0


def sample_clicks_batch(
    pred: torch.Tensor,
    gt: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Vectorised ``"random"`` clicks for a training batch (one click per sample).

    Each sample gets a voxel drawn uniformly from its FN ∪ FP region, labelled 1 if it is a
    false negative and 0 otherwise. A sample with no error gets a uniform ground-truth voxel,
    label 1; a sample with an empty ground truth gets a padding click ``(0, 0, 0)`` with label
    ``-1`` (the prompt encoder's "not a point"). No Python loop over voxels or samples.

    Args:
        pred: ``(B, 1, D, H, W)`` or ``(B, D, H, W)`` current prediction (bool; integer
            non-zero or float > 0.5 count as foreground), any device.
        gt: Ground truth of the same shape.
        generator: Makes the draw reproducible. Its device may differ from the data's (the
            ``B`` uniform numbers are drawn on the generator's device, then moved).

    Returns:
        ``coords`` ``(B, 1, 3)`` float32 in tensor-axis order ``(d, h, w)`` and ``labels``
        ``(B, 1)`` int64, on the data's device.

    Raises:
        ValueError: Shapes that differ or are not 4-/5-D with one channel.
    """
    pred_b = _as_bool_tensor(pred, "pred")
    gt_b = _as_bool_tensor(gt, "gt")
    if pred_b.shape != gt_b.shape:
        raise ValueError(
            f"pred and gt must have the same shape, got {tuple(pred_b.shape)} and "
            f"{tuple(gt_b.shape)}"
        )
    if gt_b.ndim == 5:
        if gt_b.shape[1] != 1:
            raise ValueError(f"expected one channel (B, 1, D, H, W), got {tuple(gt_b.shape)}")
        pred_b, gt_b = pred_b[:, 0], gt_b[:, 0]
    elif gt_b.ndim != 4:
        raise ValueError(f"expected (B, 1, D, H, W) or (B, D, H, W), got {tuple(gt_b.shape)}")
    device = gt_b.device
    batch, d, h, w = gt_b.shape
    if pred_b.device != device:
        pred_b = pred_b.to(device)

    gt_flat = gt_b.reshape(batch, -1)
    fn = gt_flat & ~pred_b.reshape(batch, -1)
    error = gt_flat ^ pred_b.reshape(batch, -1)  # FN ∪ FP
    has_error = error.any(dim=1)
    has_gt = gt_flat.any(dim=1)
    region = torch.where(has_error[:, None], error, gt_flat)  # (B, V)
    counts = region.sum(dim=1)  # (B,)

    gen_device = generator.device if generator is not None else device
    u = torch.rand(batch, generator=generator, device=gen_device, dtype=torch.float64).to(device)
    # k-th voxel of the region (0-based), uniform in [0, count)
    k = torch.minimum((u * counts).floor().long(), (counts - 1).clamp(min=0))
    cum = region.cumsum(dim=1, dtype=torch.int64)  # (B, V), non-decreasing
    idx = torch.searchsorted(cum, (k + 1)[:, None]).squeeze(1)  # first position with cum >= k+1
    idx = idx.clamp(max=region.shape[1] - 1)

    label = torch.where(has_error, fn.gather(1, idx[:, None]).squeeze(1), torch.ones_like(has_gt))
    labels = label.long()
    labels = torch.where(has_gt, labels, torch.full_like(labels, PADDING_LABEL))
    idx = torch.where(has_gt, idx, torch.zeros_like(idx))

    coords = torch.stack((idx // (h * w), (idx // w) % h, idx % w), dim=1).float()  # (B, 3)
    return coords[:, None, :], labels[:, None]


__all__ = [
    "CLICK_STRATEGIES",
    "PADDING_LABEL",
    "Click",
    "ClickStrategy",
    "padded_edt",
    "sample_clicks_batch",
    "sample_next_click",
]
