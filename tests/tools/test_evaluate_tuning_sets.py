"""tools/evaluate_tuning_sets.sh refuses missing arguments with one line, before any work."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "evaluate_tuning_sets.sh"


def test_missing_arguments_are_one_line() -> None:
    for args, name in (([], "checkpoint"), (["default"], "output folder")):
        proc = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True)
        assert proc.returncode != 0
        assert proc.stderr.count("\n") == 1 and name in proc.stderr, proc.stderr


def test_an_evaluate_error_is_shown_and_stops_the_run(tmp_path: Path) -> None:
    """evaluate's output is kept out of the way, but not its errors: the script names the
    failed call and stops (before, it exited 2 without a word)."""
    tune = tmp_path / "tune"
    for name in ("Dataset304_MNI152_Lesions", "Dataset306_MNI152_LesionsB"):
        (tune / name).mkdir(parents=True)  # present: nothing is built; Dataset301 is missing
    proc = subprocess.run(
        ["bash", str(SCRIPT), "default", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env={**os.environ, "TUNE_DIR": str(tune)},
    )
    assert proc.returncode == 2
    assert "sammed3d evaluate failed (--data " in proc.stderr
    assert "Dataset301_MNI152_Brain" in proc.stderr
    assert "Traceback" not in proc.stderr
