#!/usr/bin/env python
"""What to show after a corrective click: inference rules measured on validation crops.

The 5-click chains of ``tools/check_click_chain.py`` (same crops, clicks and first-click rule),
with a rule for the mask kept after each later click. Used to test whether Dice falls after a
corrective click can be stopped at inference instead of by training (docs/default_model.md,
segments 10 to 12). Rules:

- ``model``: the model's mask 0 (what the session does);
- ``progressive``: FocalClick's progressive merge (Chen et al., CVPR 2022, §3.4): only the
  connected part of the change that contains the new click is applied, the rest of the
  previous mask is kept;
- ``ballR``: changes only within R voxels of the new click (a local edit, e.g. ``ball24``);
- ``consistent``: of mask 0 and the three multimask outputs, one that honours the most clicks
  (mask 0 on a tie, else the first-click rule among the tied);
- ``multimask``: the three multimask outputs and the first-click rule at every click;
- ``oracle``: the best of the four by Dice against the target at each click (uses the target:
  a greedy reference, not a rule);
- ``monotone``: a positive click may only add (elementwise maximum of the previous and the new
  logits), a negative click only remove (minimum); ``posmax``: the maximum after positive
  clicks only;
- ``look``: the first click keeps the multimask output with the best Dice (a person who took
  the right extent, ``InteractiveSession.choose_extent``), later clicks as ``model``.

With ``--per-crop`` it also prints, per crop and rule, the target's size, the mask's size
after each click, each later click's sign and the Dice per click.

    .venv/bin/python tools/probe_click_rules.py CKPT N RULE [RULE ...] [--per-crop]   (2N crops)
"""

from __future__ import annotations

import sys

import torch
from check_click_chain import RULES, chain, summary
from validation_crops import validation_crops

from sammed3d.build import CheckpointError, load_checkpoint


def parse(argv: list[str]) -> tuple[str, int, list[str], bool]:
    """``CKPT N RULE … [--per-crop]`` -> checkpoint, N, rules, per_crop; SystemExit with a
    one-line message on bad input."""
    per_crop = "--per-crop" in argv
    args = [a for a in argv if a != "--per-crop"]
    if len(args) < 3:
        sys.exit("usage: " + __doc__.strip().splitlines()[-1].strip())
    if not args[1].isdigit() or int(args[1]) < 1:
        sys.exit(f"N must be a positive whole number of crops per source, got {args[1]!r}")
    for rule in args[2:]:
        if rule not in RULES and not (rule.startswith("ball") and rule[4:].isdigit()):
            sys.exit(f"unknown rule {rule!r}: expected one of {', '.join(RULES)} or ballR")
    return args[0], int(args[1]), args[2:], per_crop


def main() -> None:
    path, n, rules, per_crop = parse(sys.argv[1:])
    try:
        model = load_checkpoint(path).eval()
    except (FileNotFoundError, CheckpointError) as exc:
        sys.exit(f"cannot load checkpoint {path}: {exc}")
    torch.set_num_threads(2)
    results: dict[tuple[str, str], list[list[float]]] = {}
    with torch.no_grad():
        for seed, source, image, ref in validation_crops(model.img_size, n):
            emb = model.encode(image)
            for rule in rules:
                dice, voxels, signs = chain(model, emb, ref, 5, seed, rule)
                results.setdefault((rule, source), []).append(dice)
                if per_crop:
                    print(f"{rule} {source} seed {seed}: target {int(ref.sum())} voxels, mask "
                          f"{voxels}, later clicks {signs} (1 positive), Dice "
                          f"{[round(v, 3) for v in dice]}")  # fmt: skip
    for (rule, source), rows in results.items():
        print(f"{rule:12s} {source} ({len(rows)} crops): {summary(rows)}")


if __name__ == "__main__":
    main()
