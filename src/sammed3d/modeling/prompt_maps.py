"""Clicks drawn as dense maps: the spatial prompt of our own (non-published) models.

The published model receives a click only as a point token; at the first click its mask
prompt is all zeros, so nothing spatial tells the image path where the click is. Models built
with ``ModelConfig.click_maps=True`` also receive every click as a Gaussian blob in a
positive and a negative channel, next to the previous logits in the mask prompt (and, with a
high-resolution head, at that head's resolution).
"""

from __future__ import annotations

import torch

#: Standard deviation of a click blob, in voxels of the model input (1.5 mm each: 4.5 mm).
CLICK_SIGMA_VOXELS = 3.0


def draw_click_maps(
    coords: torch.Tensor | None,
    labels: torch.Tensor | None,
    size: int,
    img_size: int,
    batch: int,
    *,
    sigma: float = CLICK_SIGMA_VOXELS,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Positive and negative click maps on a ``size^3`` grid covering the model input.

    Each click contributes ``exp(-d^2 / (2 sigma^2))`` (``d``: distance in input voxels from
    the click to a cell centre); a channel holds the maximum over its clicks. Coordinates are
    in the same tensor-axis order as the point prompts (no axis swap).

    Args:
        coords: ``(B, N, 3)`` click positions in input voxels, tensor-axis order, or None.
        labels: ``(B, N)``: 1 positive, 0 negative, -1 ignored; or None.
        size: Edge of the output grid (e.g. 32 or 64 for a 128 input).
        img_size: Edge of the model input in voxels (128).
        batch: Batch size (used when ``coords`` is None).
        sigma: Blob standard deviation in input voxels.
        device / dtype: Of the output (default: those of ``coords``).

    Returns:
        ``(B, 2, size, size, size)``: channel 0 positive clicks, channel 1 negative clicks.
    """
    if coords is None or labels is None or coords.shape[1] == 0:
        dev = device if device is not None else (coords.device if coords is not None else None)
        return torch.zeros((batch, 2, size, size, size), device=dev, dtype=dtype)
    device = coords.device if device is None else device
    b, n, _ = coords.shape
    cell = img_size / size
    centres = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) * cell - 0.5
    pts = coords.to(device, torch.float32)
    # (B, N, 3, size): per-axis Gaussian factors, so the 3-D blob is an outer product
    g = torch.exp(-((centres.view(1, 1, 1, -1) - pts[..., None]) ** 2) / (2.0 * sigma**2))
    blobs = g[:, :, 0, :, None, None] * g[:, :, 1, None, :, None] * g[:, :, 2, None, None, :]
    out = torch.zeros((b, 2, size, size, size), device=device, dtype=torch.float32)
    lab = labels.to(device)
    for channel, value in ((0, 1), (1, 0)):
        keep = (lab == value).to(torch.float32)[..., None, None, None]  # (B, N, 1, 1, 1)
        out[:, channel] = (blobs * keep).amax(dim=1)
    return out.to(dtype)


__all__ = ["CLICK_SIGMA_VOXELS", "draw_click_maps"]
