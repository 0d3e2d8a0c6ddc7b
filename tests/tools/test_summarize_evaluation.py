"""tools/summarize_evaluation.py: the README table from evaluation folders, with the counts of
first masks that hold their click and of clicks that lowered Dice."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sammed3d.evaluation.reports import CSV_FIELDS, format_rows

TOOL = Path(__file__).resolve().parents[2] / "tools" / "summarize_evaluation.py"


def _write_run(folder: Path, curves: dict[str, list[float]], honoured: dict[str, str]) -> None:
    rows = [
        {
            "dataset": "D",
            "case": case,
            "class": "lesion",
            "label": 1,
            "click": k + 1,
            "positive": True,
            "click_honoured": honoured[case] if k == 0 else "",
            "dice": dice,
        }
        for case, values in curves.items()
        for k, dice in enumerate(values)
    ]
    for row in rows:  # "" means an older file that did not record the column
        if row["click_honoured"] in ("0", "1"):
            row["click_honoured"] = row["click_honoured"] == "1"
        else:
            row["click_honoured"] = None
    folder.mkdir(parents=True)
    (folder / "per_click.csv").write_text(format_rows(rows, CSV_FIELDS, header=True))


def test_table_counts_first_click_hits_and_falls(tmp_path: Path) -> None:
    # model: case a falls 0.6 -> 0.4 at click 2 (a fall), case b rises; a holds its click
    _write_run(
        tmp_path / "model" / "lesions",
        {"a": [0.6, 0.4, 0.7], "b": [0.2, 0.5, 0.52]},
        {"a": "1", "b": "0"},
    )
    # baseline: from an older version without the column, one fall within 0.05
    _write_run(
        tmp_path / "region_growing" / "lesions",
        {"a": [0.5, 0.46, 0.5], "b": [0.1, 0.1, 0.1]},
        {"a": "", "b": ""},
    )
    out = subprocess.run(
        [sys.executable, str(TOOL), str(tmp_path)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0].endswith("| first mask holds its click | clicks lowering Dice by > 0.05 |")
    model = next(line for line in out if "default model" in line)
    baseline = next(line for line in out if "region growing" in line)
    assert model == (
        "| Colin27 synthetic lesions (2) | default model | 0.400 | 0.450 | 0.610 | 1/2 | 1/4 |"
    )
    assert baseline.endswith("| 0.300 | 0.280 | 0.300 | - | 0/4 |")


def test_without_a_baseline_run_its_rows_show_dashes(tmp_path: Path) -> None:
    # evaluate_default_model.sh BASELINE=0 writes no region_growing folder
    _write_run(tmp_path / "model" / "lesions", {"a": [0.6, 0.7, 0.8]}, {"a": "1"})
    out = subprocess.run(
        [sys.executable, str(TOOL), str(tmp_path)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert (
        "| Colin27 synthetic lesions (1) | default model | 0.600 | 0.700 | 0.800 | 1/1 | 0/2 |"
        in out
    )
    assert "| Colin27 synthetic lesions (1) | region growing | - | - | - | - | - |" in out


def test_no_model_runs_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(TOOL), str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "no " in proc.stderr and "per_click.csv" in proc.stderr
