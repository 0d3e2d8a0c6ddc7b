#!/usr/bin/env python
"""Dice per click, and how often a click makes the mask worse, on validation crops.

The centred validation crops of ``tools/validation_crops.py`` (generated shapes and MNI152
anatomy, never drawn by training nor by the evaluation), first click at the centre, where
inference puts the ROI. Then the published protocol: every later click uniform in the current error
(positive in a false negative, negative in a false positive), all clicks and the previous
logits given to the model, as the session does. The first click takes the multimask output the
model's rule keeps (``first_click_multimask`` models). Prints, per source, the mean Dice at each
click and the share of clicks after which Dice fell by more than 0.05.

    .venv/bin/python tools/check_click_chain.py CKPT [N] [CLICKS]   (2N crops; N=20, CLICKS=5)
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from validation_crops import validation_crops

from sammed3d.build import load_checkpoint
from sammed3d.evaluation.metrics import dice as dice_score
from sammed3d.modeling import select_first_click_mask


def chain(model: torch.nn.Module, image: torch.Tensor, ref: np.ndarray, clicks: int, seed: int):
    """Dice after each of ``clicks`` clicks on one centred ``(1, 1, S, S, S)`` crop."""
    rng = np.random.default_rng(seed)
    emb = model.encode(image)
    coords, labels = [[model.img_size // 2] * 3], [1]
    prompt, dice = None, []
    for _ in range(clicks):
        logits, iou = model.decode(
            emb, torch.tensor([coords], dtype=torch.float32), torch.tensor([labels]), prompt,
            multimask_output=prompt is None and model.first_click_multimask,
        )  # fmt: skip
        if prompt is None and model.first_click_multimask:
            logits, iou = select_first_click_mask(logits, iou)
        prompt = logits
        pred = (model.upsample_logits(logits)[0, 0] > 0).cpu().numpy()
        dice.append(dice_score(pred, ref))
        error = np.argwhere(pred ^ ref)
        if not len(error):
            break
        voxel = error[rng.integers(len(error))]
        coords.append([int(v) for v in voxel])
        labels.append(int(ref[tuple(voxel)]))
    return dice + [dice[-1]] * (clicks - len(dice))  # a perfect mask stays perfect


def main() -> None:
    torch.set_num_threads(1)
    model = load_checkpoint(sys.argv[1]).eval()
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    clicks = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    results: dict[str, list[list[float]]] = {"generated": [], "MNI152 anatomy": []}
    with torch.no_grad():
        for seed, source, image, ref in validation_crops(model.img_size, n):
            results[source].append(chain(model, image, ref, clicks, seed))
    for source, rows in results.items():
        d = np.array(rows)
        falls = float((np.diff(d, axis=1) < -0.05).mean())
        per_click = " / ".join(f"{v:.3f}" for v in d.mean(0))
        print(f"{source} ({len(d)} crops): Dice per click {per_click}; "
              f"a click made it worse by > 0.05 in {falls:.0%} of the clicks")  # fmt: skip


if __name__ == "__main__":
    main()
