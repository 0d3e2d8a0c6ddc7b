#!/usr/bin/env python
"""Dice per click, and how often a click makes the mask worse, on validation crops.

The centred validation crops of ``tools/validation_crops.py`` (generated shapes and MNI152
anatomy, never drawn by training nor by the evaluation), first click at the centre, where
inference puts the ROI. Then the published protocol: every later click uniform in the current error
(positive in a false negative, negative in a false positive), all clicks and the previous
logits given to the model, as the session does. The first click takes the multimask output the
model's rule keeps (``first_click_multimask`` models). Prints, per source, the mean Dice at each
click and the share of clicks after which Dice fell by more than 0.05.
``tools/probe_click_rules.py`` runs the same chains with other rules for the mask kept after a
later click.

    .venv/bin/python tools/check_click_chain.py CKPT [N] [CLICKS]   (2N crops; N=20, CLICKS=5)
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage
from validation_crops import validation_crops

from sammed3d.build import load_checkpoint
from sammed3d.evaluation.metrics import dice as dice_score
from sammed3d.modeling import ImageEmbedding, Sam3D, select_first_click_mask

#: Rules for the mask kept after a later click (``ballR`` too); see probe_click_rules.py.
RULES = ("model", "progressive", "consistent", "multimask", "oracle", "monotone", "posmax", "look")


def merge(rule: str, prev: np.ndarray, new: np.ndarray, click: tuple[int, ...]) -> np.ndarray:
    """The mask shown after a later click under a merge rule (``progressive`` or ``ballR``)."""
    out = prev.copy()
    if rule.startswith("ball"):
        grid = np.ogrid[tuple(slice(0, s) for s in new.shape)]
        ball = sum((g - c) ** 2 for g, c in zip(grid, click, strict=True)) <= float(rule[4:]) ** 2
        out[ball] = new[ball]
        return out
    change = new ^ prev
    if not change[click]:
        return new  # the model did not change the clicked voxel: nothing to anchor a merge
    parts, _ = ndimage.label(change, structure=np.ones((3, 3, 3)))
    part = parts == parts[click]
    out[part] = new[part]
    return out


def choose(
    rule: str,
    mask0: torch.Tensor,
    multi: torch.Tensor,
    iou: torch.Tensor,
    binary: Callable[[torch.Tensor], np.ndarray],
    ref: np.ndarray,
    clicked: list[tuple[list[int], int]],
) -> torch.Tensor:
    """The logits kept after a later click under a selection rule (``consistent``,
    ``multimask`` or ``oracle``), from mask 0 and the multimask outputs ``multi`` (``iou``)."""
    if rule == "multimask":
        return select_first_click_mask(multi, iou)[0]
    options = [mask0] + [multi[:, k : k + 1] for k in range(multi.shape[1])]
    masks = [binary(o) for o in options]
    if rule == "oracle":
        return options[int(np.argmax([dice_score(m, ref) for m in masks]))]
    kept = [sum(int(m[tuple(c)] == bool(v)) for c, v in clicked) for m in masks]
    if kept[0] == max(kept):
        return mask0
    tied = [k - 1 for k in range(1, len(masks)) if kept[k] == max(kept)]
    return select_first_click_mask(multi[:, tied], iou[:, tied])[0]


def chain(
    model: Sam3D, emb: ImageEmbedding, ref: np.ndarray, clicks: int, seed: int, rule: str = "model"
) -> tuple[list[float], list[int], list[int]]:
    """One chain of ``clicks`` clicks on a centred crop (``emb``: ``model.encode`` of it).

    Returns the Dice and the mask's voxel count after each click, and the later clicks' signs
    (1 positive). A perfect mask stays perfect: its values are repeated.
    """
    rng = np.random.default_rng(seed)
    coords, labels = [[model.img_size // 2] * 3], [1]
    prompt, shown, dice, voxels = None, None, [], []

    def binary(logits: torch.Tensor) -> np.ndarray:
        return (model.upsample_logits(logits)[0, 0] > 0).cpu().numpy()

    for _ in range(clicks):
        pc, pl = torch.tensor([coords], dtype=torch.float32), torch.tensor([labels])
        if prompt is None:
            first_multi = model.first_click_multimask
            logits, iou = model.decode(emb, pc, pl, None, multimask_output=first_multi)
            if first_multi and rule == "look":  # a person who took the best extent
                logits = logits[:, [int(np.argmax([dice_score(binary(logits[:, k : k + 1]), ref)
                                                   for k in range(logits.shape[1])]))]]  # fmt: skip
            elif first_multi:
                logits, _ = select_first_click_mask(logits, iou)
        else:
            logits, _ = model.decode(emb, pc, pl, prompt, multimask_output=False)
            if rule in ("consistent", "multimask", "oracle"):
                multi, iou = model.decode(emb, pc, pl, prompt, multimask_output=True)
                clicked = list(zip(coords, labels, strict=True))
                logits = choose(rule, logits, multi, iou, binary, ref, clicked)
            if rule == "monotone" or (rule == "posmax" and labels[-1] == 1):
                combine = torch.maximum if labels[-1] == 1 else torch.minimum
                logits = combine(prompt, logits)
        prompt = logits
        pred = binary(logits)
        if shown is not None and (rule == "progressive" or rule.startswith("ball")):
            pred = merge(rule, shown, pred, tuple(int(v) for v in coords[-1]))
        shown = pred
        dice.append(dice_score(shown, ref))
        voxels.append(int(shown.sum()))
        error = np.argwhere(shown ^ ref)
        if not len(error):
            break
        voxel = error[rng.integers(len(error))]
        coords.append([int(v) for v in voxel])
        labels.append(int(ref[tuple(voxel)]))
    pad = clicks - len(dice)
    return dice + [dice[-1]] * pad, voxels + [voxels[-1]] * pad, labels[1 : len(dice)]


def summary(rows: list[list[float]]) -> str:
    """Mean Dice per click and the share of clicks that made it worse by more than 0.05."""
    d = np.array(rows)
    per_click = " / ".join(f"{v:.3f}" for v in d.mean(0))
    falls = float((np.diff(d, axis=1) < -0.05).mean())
    worse = f"a click made it worse by > 0.05 in {falls:.0%} of the clicks"
    return f"Dice per click {per_click}; {worse}"


def main() -> None:
    torch.set_num_threads(1)
    model = load_checkpoint(sys.argv[1]).eval()
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    clicks = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    results: dict[str, list[list[float]]] = {"generated": [], "MNI152 anatomy": []}
    with torch.no_grad():
        for seed, source, image, ref in validation_crops(model.img_size, n):
            results[source].append(chain(model, model.encode(image), ref, clicks, seed)[0])
    for source, rows in results.items():
        print(f"{source} ({len(rows)} crops): {summary(rows)}")


if __name__ == "__main__":
    main()
