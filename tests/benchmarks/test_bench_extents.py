"""benchmarks/bench_extents.py runs the path it names: the click gets several masks, each is
taken, and the report has the ratio against the first click of the same run."""

from __future__ import annotations

import re

from tests.benchmarks import run_bench


def test_extents_are_listed_and_taken() -> None:
    proc = run_bench("bench_extents.py", "--threads", "1", "--repeat", "1")
    assert proc.returncode == 0, proc.stderr
    found = re.search(r"\((\d+) masks, .*over (\d+)\)", proc.stdout)
    assert found and int(found.group(1)) >= 2 and int(found.group(2)) == int(found.group(1))
    assert "ratio extents() / first click" in proc.stdout


def test_bad_threads_is_one_line() -> None:
    proc = run_bench("bench_extents.py", "--threads", "0")
    assert proc.returncode == 2 and "--repeat and --threads must be >= 1" in proc.stderr
