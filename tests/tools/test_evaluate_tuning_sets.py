"""tools/evaluate_tuning_sets.sh refuses missing arguments with one line, before any work."""

from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "evaluate_tuning_sets.sh"


def test_missing_arguments_are_one_line() -> None:
    for args, name in (([], "checkpoint"), (["default"], "output folder")):
        proc = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True)
        assert proc.returncode != 0
        assert proc.stderr.count("\n") == 1 and name in proc.stderr, proc.stderr
