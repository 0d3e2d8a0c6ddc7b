"""Zoom-in at an object's first click: a small object is predicted again on a finer lattice.

A model sees every ROI at one spacing (1.5 mm for the published pre-processing), and a model
trained on that grid has a size prior: a 10 mm lesion is a few low-res cells there, and the
masks it offers for it are too large or too small. Zoom-in (f-BRS, Sofiiuk et al. 2020;
RITM, Sofiiuk et al. 2022: crop around the first prediction and predict again at a larger
scale) gives such an object more voxels. In 3-D:

1. the first click is predicted as usual on the main lattice (the tile the session keeps);
2. if that mask is small (:func:`zoom_roi`: not empty, away from the ROI faces, its bounding
   box at most ``fill`` of the zoomed ROI's side), the click is predicted again in a ROI of a
   finer lattice of the same image centred on the click;
3. the zoomed logits are resampled back onto the main ROI (:func:`resample_roi_logits`):
   the object keeps living on the main lattice, so its later clicks, extension and undo
   work exactly as without zoom, with the zoomed answer as their mask prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sammed3d.inference.geometry import Lattice, RoiGrid

#: Default share of the zoomed ROI's side that a first mask's bounding box may span: the
#: object plus f-BRS's 40 % margin on each side (1 / 1.8).
ZOOM_FILL = 0.55


def zoom_roi(
    mask: np.ndarray,
    roi: RoiGrid,
    voxel: Sequence[int],
    zoom_lattice: Lattice,
    fill: float = ZOOM_FILL,
) -> RoiGrid | None:
    """The ROI of ``zoom_lattice`` to predict a small first mask again in, or None.

    Args:
        mask: ``(S, S, S)`` bool first mask on ``roi``.
        roi: The ROI of that mask (main lattice).
        voxel: The click's native voxel ``(i, j, k)``; the zoomed ROI is centred on it, as
            the first ROI is.
        zoom_lattice: The finer lattice of the same image.
        fill: Largest share of the zoomed ROI's side (mm) the mask's bounding box may span.

    Returns:
        None for an empty mask, a mask on a ROI face (a large object), or one whose bounding
        box spans more than ``fill * size * spacing`` mm on some axis.
    """
    if not mask.any():
        return None
    extent_mm = 0.0
    for axis in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        if hit[0] == 0 or hit[-1] == mask.shape[axis] - 1:
            return None
        extent_mm = max(extent_mm, (hit[-1] - hit[0] + 1) * float(roi.grid.spacing[axis]))
    side = np.asarray(roi.size) * np.asarray(zoom_lattice.grid.spacing, dtype=np.float64)
    if extent_mm > fill * float(side.min()):
        return None
    return zoom_lattice.roi_at(np.asarray(voxel, dtype=np.float64), roi.size)


def resample_roi_logits(
    logits: torch.Tensor, src: RoiGrid, dst: RoiGrid, size: int, fill: float | None = None
) -> torch.Tensor:
    """Logits on ``src``'s grid of cells, sampled (trilinear) at ``dst``'s cell centres.

    Both ROIs are boxes of lattices of one image; a grid of ``n`` cells per axis covers its
    ROI's ``S`` voxels (cell ``k`` centred on voxel ``(k + 0.5) S / n - 0.5``), so low-res
    logits (``n = 64``) and upsampled ones (``n = S``) are both handled.

    Args:
        logits: ``(1, 1, n, n, n)`` on ``src``.
        src: The ROI ``logits`` belong to.
        dst: The ROI to sample them on.
        size: Cells per axis of the result.
        fill: Value outside ``src`` (default: the minimum of ``logits``, its most certain
            background).

    Returns:
        ``(1, 1, size, size, size)`` on ``dst``, same dtype and device as ``logits``.
    """
    s_dst = np.asarray(dst.size, dtype=np.float64)
    s_src = np.asarray(src.size, dtype=np.float64)
    # dst ROI voxel -> src ROI voxel is affine (both are grids of the same native image)
    probe = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    mapped = src.native_to_roi(dst.roi_to_native(probe))
    offset, linear = mapped[0], mapped[1:] - mapped[0]  # v_src = v_dst @ linear + offset
    axes = [(np.arange(size) + 0.5) * s_dst[a] / size - 0.5 for a in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    v_src = grid @ linear + offset
    norm = (v_src + 0.5) / s_src * 2.0 - 1.0  # align_corners=False coordinates
    # grid_sample wants (x, y, z) = (last axis, middle, first)
    sample = torch.as_tensor(norm[:, ::-1].copy(), dtype=torch.float32, device=logits.device)
    sample = sample.view(1, size, size, size, 3)
    base = float(logits.min()) if fill is None else float(fill)
    out = F.grid_sample(
        logits.float() - base, sample, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return (out + base).to(logits.dtype)


__all__ = ["ZOOM_FILL", "resample_roi_logits", "zoom_roi"]
