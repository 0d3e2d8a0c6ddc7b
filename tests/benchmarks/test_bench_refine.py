"""benchmarks/bench_refine.py runs both settings on both objects and reports their ratios."""

from __future__ import annotations

import re

from tests.benchmarks import run_bench


def test_refinement_off_and_on_are_compared() -> None:
    proc = run_bench("bench_refine.py", "--threads", "1", "--repeat", "1")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^off, ball: first click median", proc.stdout, re.M)
    assert re.search(r"^refinement 3 mm, brain: first click median", proc.stdout, re.M)
    ratios = re.findall(r"ratio on / off, (\w+): first click ([\d.]+)x", proc.stdout)
    assert [r[0] for r in ratios] == ["ball", "brain"] and all(float(r[1]) > 0 for r in ratios)


def test_bad_repeat_is_one_line() -> None:
    proc = run_bench("bench_refine.py", "--repeat", "0")
    assert proc.returncode == 2 and "--repeat and --threads must be >= 1" in proc.stderr
