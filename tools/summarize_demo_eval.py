"""Mean Dice per click count on the held-out Colin27 volume, split into structure categories seen
in training (on another brain) and categories held out of training entirely.

Usage: .venv/bin/python tools/summarize_demo_eval.py runs/eval_demo_model runs/eval_region_growing
"""

from __future__ import annotations

import csv
import math
import statistics
import sys
from pathlib import Path

HELD_OUT = {"Caudate", "Putamen", "Pallidum", "Amygdala"}


def summarize(folder: Path) -> dict[tuple[int, str], tuple[float, int]]:
    rows = list(csv.DictReader((folder / "per_click.csv").open(encoding="utf-8")))
    out = {}
    for click in sorted({int(r["click"]) for r in rows}):
        for group in ("seen", "held-out", "all"):
            vals = [
                float(r["dice"])
                for r in rows
                if int(r["click"]) == click
                and r["dice"] not in ("", "nan")
                and not math.isnan(float(r["dice"]))
                and (
                    group == "all"
                    or (r["class"].split("_")[0] in HELD_OUT) == (group == "held-out")
                )
            ]
            out[(click, group)] = (statistics.mean(vals), len(vals))
    return out


def main(argv: list[str]) -> int:
    for folder in argv:
        res = summarize(Path(folder))
        print(folder)
        for (click, group), (mean, n) in res.items():
            print(f"  click {click:>2}  {group:<9} n={n:<4} Dice {mean:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
