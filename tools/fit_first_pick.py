#!/usr/bin/env python
"""Fit the learned pick's weights (``tools/pick_features.py``) on tables of
``tools/collect_pick_features.py``, and report how each pick does.

A conditional logit: the probability of a click's mask k is ``softmax(features @ w)`` over
that click's masks; the weights maximise the mean expected Dice over clicks minus ``--l2``
times ``|w|^2`` (L-BFGS from zero weights). Reported per source: mean first-click Dice of the
model's own pick, the edge pick, the learned pick and the best mask: the learned pick
fitted on all data, with every source group left out in turn ("set out": the pick on a
group is made with weights fitted without it) and in a 5-fold cross-validation over clicks.

    .venv/bin/python tools/fit_first_pick.py TABLE.npz [TABLE.npz ...] [--l2 0.01]
        [--json weights.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from pick_features import FEATURES, learned_pick

#: Sources that are one set of targets (the same lesions at two resolutions) are left out
#: together.
FAMILY = {
    "Dataset304_MNI152_Lesions": "MNI152 lesions A",
    "Dataset305_MNI152_Lesions15": "MNI152 lesions A",
    "Dataset306_MNI152_LesionsB": "MNI152 lesions B",
    "Dataset307_MNI152_LesionsB15": "MNI152 lesions B",
    "Dataset301_MNI152_Brain": "MNI152 structures",
    "Dataset302_MNI152_Tissue": "MNI152 structures",
}

#: The fit starts from (and is drawn towards) the edge pick: a high weight on the edge score
#: and on the clicked voxels being like the inside.
EDGE_START = 10.0
LIKE_START = 60.0
#: Folds of the cross-validation over clicks.
FOLDS = 5


def load(paths: list[Path]) -> list[dict]:
    """One dict per click: ``features`` (n, F), ``dice`` (n,), ``source``, ``family``."""
    clicks = []
    for path in paths:
        t = np.load(path)
        if list(t["names"]) != list(FEATURES):
            raise SystemExit(f"{path}: features {list(t['names'])}, expected {list(FEATURES)}")
        for g in np.unique(t["group"]):
            rows = t["group"] == g
            source = str(t["source"][rows][0])
            clicks.append(
                {
                    "features": t["features"][rows],
                    "dice": t["dice"][rows],
                    "source": source,
                    "family": FAMILY.get(source, source),
                }
            )
    return clicks


def fit(clicks: list[dict], l2: float) -> np.ndarray:
    """Weights maximising the mean expected Dice of the softmax pick minus ``l2 |w|^2``."""
    feats = [torch.as_tensor(c["features"], dtype=torch.float64) for c in clicks]
    dices = [torch.as_tensor(c["dice"], dtype=torch.float64) for c in clicks]
    start = torch.zeros(len(FEATURES), dtype=torch.float64)
    start[FEATURES.index("edge")] = EDGE_START
    start[FEATURES.index("like_click")] = LIKE_START
    w = start.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        gain = torch.stack(
            [(torch.softmax(f @ w, 0) * d).sum() for f, d in zip(feats, dices, strict=True)]
        ).mean()
        loss = -gain + l2 * ((w - start) ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy()


def edge_pick_index(f: np.ndarray) -> int:
    """The edge pick from the features: highest edge score among masks like the click."""
    like = np.flatnonzero(f[:, FEATURES.index("like_click")] > 0)
    allowed = like if like.size else np.arange(len(f))
    edge = f[allowed, FEATURES.index("edge")]
    return int(allowed[np.argmax(edge)])


def report(clicks: list[dict], picks: dict[str, list[int]]) -> None:
    families = sorted({c["family"] for c in clicks})
    print(f"{'set':24s} {'clicks':>6s} " + " ".join(f"{k:>9s}" for k in picks) + "      best")
    for fam in [*families, "all"]:
        idx = [i for i, c in enumerate(clicks) if fam in ("all", c["family"])]
        vals = [np.mean([clicks[i]["dice"][picks[k][i]] for i in idx]) for k in picks]
        best = np.mean([clicks[i]["dice"].max() for i in idx])
        print(f"{fam:24s} {len(idx):6d} " + " ".join(f"{v:9.3f}" for v in vals) + f" {best:9.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tables", type=Path, nargs="+")
    parser.add_argument("--l2", type=float, default=0.01)
    parser.add_argument("--json", type=Path, help="write the weights fitted on all data here")
    args = parser.parse_args()
    missing = [str(t) for t in args.tables if not t.is_file()]
    if missing:
        parser.error(f"no such table(s): {', '.join(missing)}")
    if not (args.l2 >= 0 and np.isfinite(args.l2)):
        parser.error(f"--l2 must be a number >= 0, got {args.l2}")
    clicks = load(args.tables)
    if len(clicks) < FOLDS:
        parser.error(f"need at least {FOLDS} clicks for the cross-validation, got {len(clicks)}")
    w = fit(clicks, args.l2)
    picks = {
        "model": [0] * len(clicks),
        "edges": [edge_pick_index(c["features"]) for c in clicks],
        "learned": [learned_pick(c["features"], w) for c in clicks],
    }
    cv = [0] * len(clicks)
    families = sorted({c["family"] for c in clicks})
    for fam in families if len(families) > 1 else []:  # one family: nothing to leave out
        train = [c for c in clicks if c["family"] != fam]
        w_cv = fit(train, args.l2)
        for i, c in enumerate(clicks):
            if c["family"] == fam:
                cv[i] = learned_pick(c["features"], w_cv)
    if len(families) > 1:
        picks["set out"] = cv
    folds = np.random.default_rng(0).permutation(len(clicks)) % FOLDS
    kfold = [0] * len(clicks)
    for k in range(FOLDS):
        w_k = fit([c for c, f in zip(clicks, folds, strict=True) if f != k], args.l2)
        for i, c in enumerate(clicks):
            if folds[i] == k:
                kfold[i] = learned_pick(c["features"], w_k)
    picks[f"{FOLDS}-fold"] = kfold
    report(clicks, picks)
    print("weights: " + ", ".join(f"{n} {v:+.3f}" for n, v in zip(FEATURES, w, strict=True)))
    if args.json:
        args.json.write_text(json.dumps([round(float(v), 4) for v in w]) + "\n")


if __name__ == "__main__":
    main()
