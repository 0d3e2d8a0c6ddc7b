"""Over-segmented mask prompts: the "first mask leaked, the user clicks the leak away" case.

The click loop feeds each click the model's own previous mask. A model's first mask on a large
target is mostly too small, so in training a negative second click nearly always follows a
first mask that was too *large* for a *small* target, and the network learns "one positive
plus one negative click means a small structure near the positive click". On real scans the
first mask of a large structure often leaks into a neighbour; the negative click in the leak
then erases the whole mask (docs/default_model.md, segments 10 to 13).

:func:`leaked_prompt` builds the missing case: the target plus an attached excess region (a
ball centred just outside the target's surface, sometimes also kept within a band around the
target, so that it hugs it as a leak along a border does), as soft logits. The click loop uses
it as the mask prompt of one later click (the second, or one drawn uniformly) for a share of the
targets (``train.leak_prompt_fraction``, ``train.leak_prompt_any_click``); the corrective
click is then drawn from that mask's error as usual, so it lands in the leak.
The training signal is "keep the mask, remove the part around the negative click".
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

#: Leak volume as a fraction of the target's volume: log-uniform in this range (default).
LEAK_FRACTION_RANGE = (0.05, 0.8)
#: Ball radius bounds in cells of the logit grid.
LEAK_RADIUS_RANGE = (1.5, 24.0)
#: Magnitude of the prompt's logits (inside +a, outside -a), uniform in this range.
LOGIT_RANGE = (2.0, 8.0)
#: Cells within this distance of an earlier negative click stay out of a leak.
KEEP_OUT_RADIUS = 2.0


def leaked_prompt(
    target: torch.Tensor,
    rng: np.random.Generator,
    keep_out: torch.Tensor | None = None,
    fraction_range: tuple[float, float] = LEAK_FRACTION_RANGE,
) -> torch.Tensor | None:
    """The target plus an attached leak, as logits on the target's grid.

    Args:
        target: ``(D, H, W)`` boolean target on the model's logit grid (e.g. 64^3).
        rng: Source of every random choice (leak place, size, shape, logit scale).
        keep_out: ``(N, 3)`` cells of earlier negative clicks (grid indexes, tensor-axis
            order): the leak stays ``KEEP_OUT_RADIUS`` cells away from them, so the prompt
            never contradicts a click already given. None: no such clicks.
        fraction_range: ``(low, high)`` leak volume relative to the target's, drawn
            log-uniformly; above 1 the "leak" outgrows the target (a first mask far too large
            for a small target). The ball radius is capped at ``LEAK_RADIUS_RANGE``.

    Returns:
        ``(D, H, W)`` float32 logits: positive exactly inside the target and the leak, with
        magnitudes softened near the border by a 3^3 box filter, as a model's are; None when
        the target is empty or leaves no room for a leak.
    """
    if target.ndim != 3:
        raise ValueError(f"target must be (D, H, W), got shape {tuple(target.shape)}")
    low, high = fraction_range
    if not 0 < low <= high:
        raise ValueError(f"fraction_range must be 0 < low <= high, got {fraction_range}")
    tgt = target.bool()
    volume = int(tgt.sum())
    if volume == 0:
        return None
    t = tgt[None, None].float()
    shell = (F.max_pool3d(t, 3, stride=1, padding=1)[0, 0] > 0) & ~tgt
    cells = shell.nonzero()
    if cells.shape[0] == 0:
        return None
    centre = cells[int(rng.integers(cells.shape[0]))].to(torch.float32)
    fraction = math.exp(rng.uniform(math.log(low), math.log(high)))
    # about half of a ball centred on the surface lies outside the target
    radius = (3.0 * 2.0 * fraction * volume / (4.0 * math.pi)) ** (1.0 / 3.0)
    radius = float(np.clip(radius, *LEAK_RADIUS_RANGE))
    axes = [torch.arange(n, dtype=torch.float32) for n in tgt.shape]
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    dist2 = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2
    leak = (dist2 <= radius**2) & ~tgt
    if rng.random() < 0.5:  # hug the target: keep the leak within a band around it
        band = max(1, int(math.ceil(radius / 2.0)))
        near = F.max_pool3d(t, 2 * band + 1, stride=1, padding=band)[0, 0] > 0
        leak &= near
    if keep_out is not None:
        for cell in keep_out.to(torch.float32):
            d2 = (zz - cell[0]) ** 2 + (yy - cell[1]) ** 2 + (xx - cell[2]) ** 2
            leak &= d2 > KEEP_OUT_RADIUS**2
    if not bool(leak.any()):
        return None
    scale = float(rng.uniform(*LOGIT_RANGE))
    mask = (tgt | leak).float()
    soft = F.avg_pool3d(mask[None, None], 3, stride=1, padding=1, count_include_pad=False)[0, 0]
    # the mean of a hard and a box-filtered map: the sign is the hard mask's everywhere
    return (mask + soft - 1.0) * scale


__all__ = [
    "KEEP_OUT_RADIUS",
    "LEAK_FRACTION_RANGE",
    "LEAK_RADIUS_RANGE",
    "LOGIT_RANGE",
    "leaked_prompt",
]
