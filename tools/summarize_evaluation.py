"""Mean Dice per click count and evaluation set, model vs region growing, as a Markdown table.

Also per set: how many first masks contain their click, and how many clicks (after the first,
over clicks 1..5 of every target) lowered the target's Dice by more than 0.05.

Reads ``OUT/{model,region_growing}/<run>/per_click.csv`` written by
``tools/evaluate_default_model.sh``; runs named ``<set>_s<seed>`` are pooled per set.

Usage: .venv/bin/python tools/summarize_evaluation.py runs/eval
"""

from __future__ import annotations

import csv
import math
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

#: Set name -> (table row label, how the rows are split into groups).
GROUPS = {
    "brain": "Colin27 whole brain",
    "tissue": "Colin27 {class}",
    "lesions": "Colin27 synthetic lesions",
    "synthetic": "held-out generated crops",
    "aal": "Colin27 AAL regions (atlas check)",
}


#: A click lowers Dice when the target's Dice falls by more than this (as ``sammed3d evaluate``).
FALL = 0.05


class Table:
    """Per row label: Dice per click, first-click honoured flags, and Dice falls."""

    def __init__(self) -> None:
        self.dice: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.first_honoured: dict[str, list[bool]] = defaultdict(list)
        self.falls: dict[str, list[bool]] = defaultdict(list)


def collect(method_dir: Path, groups: dict[str, str] | None = None) -> Table:
    """Every run folder of one method, pooled per row label (``groups``: run name without
    its ``_s<seed>`` -> row label template; default :data:`GROUPS`)."""
    groups = GROUPS if groups is None else groups
    table = Table()
    if not method_dir.is_dir():  # e.g. no baseline run (evaluate_default_model.sh BASELINE=0)
        return table
    for run in sorted(p for p in method_dir.iterdir() if (p / "per_click.csv").is_file()):
        base = re.sub(r"_s\d+$", "", run.name)
        template = groups.get(base, base)
        curves: dict[tuple[str, str, str], dict[int, float]] = defaultdict(dict)
        with (run / "per_click.csv").open(encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                label = template.format(**{"class": row["class"].replace("_", " ")})
                click = int(row["click"])
                if click == 1 and row.get("click_honoured") in ("0", "1"):
                    table.first_honoured[label].append(row["click_honoured"] == "1")
                if row["dice"] in ("", "nan") or math.isnan(float(row["dice"])):
                    continue
                table.dice[label][click].append(float(row["dice"]))
                curves[(label, row["case"], row["label"])][click] = float(row["dice"])
        for (label, _, _), by_click in curves.items():
            for k, value in by_click.items():
                if k - 1 in by_click:
                    table.falls[label].append(value < by_click[k - 1] - FALL)
    return table


def _share(flags: list[bool]) -> str:
    return f"{sum(flags)}/{len(flags)}" if flags else "-"


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path("runs/eval")
    model = collect(root / "model")
    if not model.dice:
        print(
            f"error: no {root}/model/<run>/per_click.csv (expected the output of "
            "tools/evaluate_default_model.sh)",
            file=sys.stderr,
        )
        return 2
    baseline = collect(root / "region_growing")
    clicks = sorted({c for rows in model.dice.values() for c in rows})
    head = " | ".join(f"{c} click{'s' if c > 1 else ''}" for c in clicks)
    print(
        f"| set (n targets) | method | {head} | first mask holds its click "
        f"| clicks lowering Dice by > {FALL} |"
    )
    print("|---|---|" + "---|" * (len(clicks) + 2))
    for label in model.dice:
        n = len(model.dice[label][clicks[0]])
        for name, table in (("default model", model), ("region growing", baseline)):
            cells = " | ".join(
                f"{statistics.mean(table.dice[label][c]):.3f}"
                if table.dice.get(label, {}).get(c)
                else "-"
                for c in clicks
            )
            extra = f"{_share(table.first_honoured.get(label, []))} | "
            extra += _share(table.falls.get(label, []))
            print(f"| {label} ({n}) | {name} | {cells} | {extra} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
