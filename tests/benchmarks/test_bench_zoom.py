"""benchmarks/bench_zoom.py measures what it says: the zoomed path runs for the ball, the
other setting does not (one first click each)."""

from __future__ import annotations

from tests.benchmarks import run_bench


def test_the_ball_is_zoomed_only_with_zoom_in() -> None:
    proc = run_bench("bench_zoom.py", "--threads", "1", "--repeat", "1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("no zoom:") and "zoomed 0/1" in line for line in lines)
    assert any(line.startswith("zoom-in 1 mm:") and "zoomed 1/1" in line for line in lines)
    assert "ratio zoom / no zoom" in proc.stdout


def test_bad_repeat_is_one_line() -> None:
    proc = run_bench("bench_zoom.py", "--repeat", "0")
    assert proc.returncode == 2 and "--repeat and --threads must be >= 1" in proc.stderr
