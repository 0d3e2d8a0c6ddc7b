#!/usr/bin/env python
"""Dice per click, and how often a click makes the mask worse, on validation crops.

Generated crops (random label ensembles, seeds 40,000+, and the MNI152 training anatomy with
new targets, seeds 50,000+; never drawn by training nor by the held-out evaluation set), each
centred on a uniform voxel of its target, which gets the first click there (where inference
puts the ROI). Then the published protocol: every later click uniform in the current error
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

from sammed3d.build import load_checkpoint
from sammed3d.modeling import select_first_click_mask
from sammed3d.training.interaction import centre_on_first_click
from sammed3d.training.synthesis import Anatomy, SynthesisConfig, SyntheticGenerator


def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    return float(2 * (pred & ref).sum() / max(int(pred.sum() + ref.sum()), 1))


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
        dice.append(_dice(pred, ref))
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
    gen = SyntheticGenerator(SynthesisConfig(size=model.img_size))
    anatomy = Anatomy.load("data/model/train/anatomy_mni152.npz")
    results: dict[str, list[list[float]]] = {"generated": [], "MNI152 anatomy": []}
    with torch.no_grad():
        for s in range(n):
            crops = {
                "generated": gen.sample(40_000 + s),
                "MNI152 anatomy": gen.sample_anatomy(anatomy, 50_000 + s),
            }
            for source, (image, label) in crops.items():
                lab = label.reshape(1, 1, *image.shape[-3:]).bool()
                x, lab, _ = centre_on_first_click(image[None, None].float(), lab,
                                                  torch.tensor([s]), 1.0)  # fmt: skip
                results[source].append(chain(model, x, lab[0, 0].numpy(), clicks, s))
    for source, rows in results.items():
        d = np.array(rows)
        falls = float((np.diff(d, axis=1) < -0.05).mean())
        per_click = " / ".join(f"{v:.3f}" for v in d.mean(0))
        print(f"{source} ({len(d)} crops): Dice per click {per_click}; "
              f"a click made it worse by > 0.05 in {falls:.0%} of the clicks")  # fmt: skip


if __name__ == "__main__":
    main()
