"""Mean Dice per click count and evaluation set, model vs region growing, as a Markdown table.

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


def collect(method_dir: Path) -> dict[str, dict[int, list[float]]]:
    """``{row label: {click: [dice, ...]}}`` over every run folder of one method."""
    table: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in sorted(p for p in method_dir.iterdir() if (p / "per_click.csv").is_file()):
        base = re.sub(r"_s\d+$", "", run.name)
        template = GROUPS.get(base, base)
        with (run / "per_click.csv").open(encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if row["dice"] in ("", "nan") or math.isnan(float(row["dice"])):
                    continue
                label = template.format(**{"class": row["class"].replace("_", " ")})
                table[label][int(row["click"])].append(float(row["dice"]))
    return table


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path("runs/eval")
    model = collect(root / "model")
    baseline = collect(root / "region_growing")
    clicks = sorted({c for rows in model.values() for c in rows})
    head = " | ".join(f"{c} click{'s' if c > 1 else ''}" for c in clicks)
    print(f"| set (n targets) | method | {head} |")
    print("|---|---|" + "---|" * len(clicks))
    for label in model:
        n = len(model[label][clicks[0]])
        for name, table in (("default model", model), ("region growing", baseline)):
            cells = " | ".join(
                f"{statistics.mean(table[label][c]):.3f}" if table.get(label, {}).get(c) else "-"
                for c in clicks
            )
            print(f"| {label} ({n}) | {name} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
