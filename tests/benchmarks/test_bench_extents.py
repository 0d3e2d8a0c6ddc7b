"""benchmarks/bench_extents.py runs the path it names: the click gets several masks, each is
taken, and the report has the ratio against the first click of the same run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_extents.py"


def test_extents_are_listed_and_taken() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--threads", "1", "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    found = re.search(r"\((\d+) masks, .*over (\d+)\)", proc.stdout)
    assert found and int(found.group(1)) >= 2 and int(found.group(2)) == int(found.group(1))
    assert "ratio extents() / first click" in proc.stdout


def test_bad_threads_is_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--threads", "0"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "--repeat and --threads must be >= 1" in proc.stderr
