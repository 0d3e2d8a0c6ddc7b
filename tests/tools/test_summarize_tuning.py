"""tools/summarize_tuning.py: the tuning chains' table, click seeds pooled per kind, every kind
weighed once in the mean, first masks that hold their click and Dice falls counted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sammed3d.evaluation.reports import CSV_FIELDS, format_rows

TOOL = Path(__file__).resolve().parents[2] / "tools" / "summarize_tuning.py"


def _write_run(folder: Path, curves: dict[tuple[str, str], list[float]]) -> None:
    """``curves[(case, class)]``: Dice at clicks 1.. of one target; every first click holds."""
    rows = [
        {
            "dataset": "D",
            "case": case,
            "class": cls,
            "label": 1,
            "click": k + 1,
            "positive": True,
            "click_honoured": True if k == 0 else None,
            "dice": dice,
        }
        for (case, cls), values in curves.items()
        for k, dice in enumerate(values)
    ]
    folder.mkdir(parents=True)
    (folder / "per_click.csv").write_text(format_rows(rows, CSV_FIELDS, header=True))


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True)


def test_seeds_pooled_and_kinds_weighed_once(tmp_path: Path) -> None:
    # whole brain: two click seeds of one target; the second seed falls 0.9 -> 0.5 at click 3
    _write_run(tmp_path / "brain_s1", {("b", "whole_brain"): [0.6, 0.8, 0.9]})
    _write_run(tmp_path / "brain_s2", {("b", "whole_brain"): [0.4, 0.9, 0.5]})
    # tissue: two classes in one run
    _write_run(
        tmp_path / "tissue_s1",
        {("b", "white_matter"): [0.7, 0.7, 0.7], ("b", "lateral_ventricles"): [0.2, 0.3, 0.4]},
    )
    # lesions: three targets in one run, weighed as one kind
    _write_run(
        tmp_path / "lesions",
        {("l1", "lesion"): [0.1, 0.1, 0.1], ("l2", "lesion"): [0.2, 0.2, 0.2],
         ("l3", "lesion"): [0.3, 0.3, 0.3]},
    )  # fmt: skip
    proc = _run(str(tmp_path), "--clicks", "1,3")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == (
        "| kind (targets) | 1 click | 3 clicks | first mask holds its click "
        "| clicks lowering Dice by > 0.05 |"
    )
    assert "| whole brain (2) | 0.500 | 0.700 | 2/2 | 1/4 |" in lines
    assert "| white matter (1) | 0.700 | 0.700 | 1/1 | 0/2 |" in lines
    assert "| lateral ventricles (1) | 0.200 | 0.400 | 1/1 | 0/2 |" in lines
    assert "| lesions 1 mm (3) | 0.200 | 0.200 | 3/3 | 0/6 |" in lines
    # mean of the four kinds, not of the seven targets: (0.5 + 0.7 + 0.2 + 0.2) / 4 = 0.4
    # the docs' row order: whole brain, white matter, ventricles, lesions
    assert [line.split(" (")[0] for line in lines[2:-1]] == [
        "| whole brain",
        "| white matter",
        "| lateral ventricles",
        "| lesions 1 mm",
    ]
    assert lines[-1] == "| mean of the 4 kinds | **0.400** | **0.500** | 7/7 | 1/14 |"


def test_generated_crops_are_their_own_kind_after_the_lesions(tmp_path: Path) -> None:
    _write_run(tmp_path / "synthetic", {("s0", "target"): [0.3, 0.5], ("s1", "target"): [0.5, 0.3]})
    _write_run(tmp_path / "fresh_lesions", {("l1", "lesion"): [0.6, 0.7]})
    proc = _run(str(tmp_path), "--clicks", "1,2")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[2:4] == [
        "| fresh lesions 1 mm (1) | 0.600 | 0.700 | 1/1 | 0/1 |",
        "| generated crops (2) | 0.400 | 0.400 | 2/2 | 1/2 |",
    ]


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    for args, expected in (
        ([str(tmp_path / "missing")], "is not a folder"),
        ([str(tmp_path)], "no <run>/per_click.csv"),
        ([str(tmp_path), "--clicks", "one"], "--clicks must be comma-separated integers"),
    ):
        proc = _run(*args)
        assert proc.returncode == 2
        last = proc.stderr.strip().splitlines()[-1]
        assert expected in last, proc.stderr
