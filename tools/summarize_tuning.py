"""The tuning chains of one checkpoint as a Markdown table: mean Dice per kind of target
at 1 / 3 / 5 clicks, the mean over the kinds, first masks that hold their click and clicks
that lowered a target's Dice by more than 0.05 (``sammed3d evaluate``'s threshold).

Reads ``OUT/<run>/per_click.csv`` written by ``tools/evaluate_tuning_sets.sh``: runs
``brain_s<seed>`` and ``tissue_s<seed>`` are pooled over their click seeds (one row per
structure), ``lesions``, ``lesions_15mm``, ``fresh_lesions``, ``fresh_lesions_15mm`` and
``synthetic`` (the generated crops) are one row each. The mean over the kinds weighs every
kind once, whatever its number of targets (the docs' "mean of the seven", or of the eight
with the generated crops).

Usage: .venv/bin/python tools/summarize_tuning.py runs/tune_X [--clicks 1,3,5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from summarize_evaluation import FALL, collect  # noqa: E402

#: Run name without its ``_s<seed>`` -> row label (``{class}``: the target's class).
TUNING_GROUPS = {
    "brain": "whole brain",
    "tissue": "{class}",
    "lesions": "lesions 1 mm",
    "lesions_15mm": "lesions 1.5 mm",
    "fresh_lesions": "fresh lesions 1 mm",
    "fresh_lesions_15mm": "fresh lesions 1.5 mm",
    "synthetic": "generated crops",
}


#: Row order of the table (the docs' order); other labels follow in the order found.
ROW_ORDER = (
    "whole brain",
    "white matter",
    "lateral ventricles",
    "lesions 1 mm",
    "lesions 1.5 mm",
    "fresh lesions 1 mm",
    "fresh lesions 1.5 mm",
    "generated crops",
)


def _count(flags: list[bool]) -> str:
    return f"{sum(flags)}/{len(flags)}" if flags else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=" ".join(__doc__.split("\n\n")[0].split()).replace("``", "")
    )
    parser.add_argument("out", type=Path, help="the folder tools/evaluate_tuning_sets.sh wrote")
    parser.add_argument("--clicks", default="1,3,5", help="click counts to show (default 1,3,5)")
    args = parser.parse_args(argv)
    try:
        clicks = [int(c) for c in args.clicks.split(",")]
    except ValueError:
        parser.error(f"--clicks must be comma-separated integers, got {args.clicks!r}")
    if not args.out.is_dir():
        parser.error(f"{args.out} is not a folder (expected the output of evaluate_tuning_sets.sh)")
    table = collect(args.out, TUNING_GROUPS)
    if not table.dice:
        parser.error(f"no <run>/per_click.csv under {args.out}")
    head = " | ".join(f"{c} click{'s' if c > 1 else ''}" for c in clicks)
    last = f"first mask holds its click | clicks lowering Dice by > {FALL}"
    print(f"| kind (targets) | {head} | {last} |")
    print("|---|" + "---|" * (len(clicks) + 2))
    means: dict[int, list[float]] = {c: [] for c in clicks}
    holds: list[bool] = []
    falls: list[bool] = []
    order = {label: n for n, label in enumerate(ROW_ORDER)}
    rows = sorted(table.dice.items(), key=lambda item: order.get(item[0], len(order)))
    for label, by_click in rows:
        cells = []
        for c in clicks:
            values = by_click.get(c, [])
            if values:
                means[c].append(statistics.mean(values))
            cells.append(f"{statistics.mean(values):.3f}" if values else "-")
        holds += table.first_honoured.get(label, [])
        falls += table.falls.get(label, [])
        n = len(by_click.get(clicks[0], []))
        honoured = _count(table.first_honoured.get(label, []))
        fell = _count(table.falls.get(label, []))
        print(f"| {label} ({n}) | {' | '.join(cells)} | {honoured} | {fell} |")
    kinds = len(table.dice)
    cells = " | ".join(
        f"**{statistics.mean(means[c]):.3f}**" if len(means[c]) == kinds else "-" for c in clicks
    )
    name = f"mean of the {kinds} kind{'s' if kinds > 1 else ''}"
    print(f"| {name} | {cells} | {_count(holds)} | {_count(falls)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
