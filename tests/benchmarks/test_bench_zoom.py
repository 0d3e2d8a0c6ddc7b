"""benchmarks/bench_zoom.py measures what it says: the zoomed path runs for the ball, the
other setting does not (one first click each)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_zoom.py"


def test_the_ball_is_zoomed_only_with_zoom_in() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--threads", "1", "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("no zoom:") and "zoomed 0/1" in line for line in lines)
    assert any(line.startswith("zoom-in 1 mm:") and "zoomed 1/1" in line for line in lines)
    assert "ratio zoom / no zoom" in proc.stdout


def test_bad_repeat_is_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--repeat", "0"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "--repeat and --threads must be >= 1" in proc.stderr
