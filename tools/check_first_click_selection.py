#!/usr/bin/env python
"""How well each rule picks among the multimask outputs at the first click (validation).

The centred validation crops of ``tools/validation_crops.py`` (generated shapes and MNI152
anatomy, never drawn by training nor by the evaluation), each clicked at its centre, where
inference puts the ROI. Prints the mean 1-click Dice of
the best output (oracle), of the IoU head's choice, of the stability score's, of their product
(the rule `first_click_multimask` models use), and of each output, also by target size and by
source (generated shapes, or the real MRI of the MNI152 anatomy).

    .venv/bin/python tools/check_first_click_selection.py CKPT [N]    (2N crops; default N=15)
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from validation_crops import validation_crops

from sammed3d.build import load_checkpoint
from sammed3d.evaluation.metrics import dice as dice_score
from sammed3d.modeling import stability_score


def main() -> None:
    torch.set_num_threads(1)
    model = load_checkpoint(sys.argv[1]).eval()
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    centre = float(model.img_size // 2)
    dice, iou, stab, size, real = [], [], [], [], []
    with torch.no_grad():
        for _, source, image, ref in validation_crops(model.img_size, n):
            emb = model.encode(image)
            click = torch.tensor([[[centre] * 3]])
            logits, pred_iou = model.decode(emb, click, torch.tensor([[1]]), None,
                                            multimask_output=True)  # fmt: skip
            up = model.upsample_logits(logits)
            dice.append([dice_score(u.numpy() > 0, ref) for u in up[0]])
            iou.append(pred_iou[0].numpy())
            stab.append(stability_score(logits)[0].numpy())
            size.append(int(ref.sum()))
            real.append(source != "generated")
    d, i, st, sz = np.array(dice), np.array(iou), np.array(stab), np.array(size)
    anat = np.array(real)

    def pick(score: np.ndarray, keep: np.ndarray) -> float:
        return float(d[keep][np.arange(int(keep.sum())), score[keep].argmax(1)].mean())

    everything = np.ones(len(d), dtype=bool)
    print(f"{len(d)} crops, mean 1-click Dice: best output {d.max(1).mean():.3f}, "
          f"IoU head {pick(i, everything):.3f}, stability {pick(st, everything):.3f}, "
          f"IoU x stability {pick(np.clip(i, 0, None) * st, everything):.3f}; "
          f"outputs 1/2/3 {' / '.join(f'{v:.3f}' for v in d.mean(0))}")  # fmt: skip
    groups = [(f"targets of {low:.0f}-{high:.0g} voxels", (sz >= low) & (sz < high))
              for low, high in [(0, 5e3), (5e3, 2e5), (2e5, 1e9)]]  # fmt: skip
    groups += [("generated crops", ~anat), ("MNI152 anatomy crops (real MRI)", anat)]
    for name, keep in groups:
        if keep.any():
            print(f"  {name} ({int(keep.sum())}): best "
                  f"{d[keep].max(1).mean():.3f}, IoU head {pick(i, keep):.3f}, "
                  f"IoU x stability {pick(np.clip(i, 0, None) * st, keep):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
