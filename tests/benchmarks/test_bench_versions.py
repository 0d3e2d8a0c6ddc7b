"""benchmarks/bench_versions.py times both checkouts in their own processes and reports the
ratio; a folder without the package is a one-line usage error."""

from __future__ import annotations

import re

from tests.benchmarks import BENCHMARKS, run_bench


def test_this_checkout_against_itself_reports_every_click() -> None:
    src = str(BENCHMARKS.parent / "src")
    proc = run_bench(
        "bench_versions.py", src, "--pairs", "1", "--repeat", "1", "--threads", "1", timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    ratios = re.findall(
        r"^(\w+), ([\w ]+): baseline \d+ ms .* ratio this / baseline ([\d.]+)x$",
        proc.stdout,
        re.M,
    )
    assert [r[:2] for r in ratios] == [
        (what, click)
        for what in ("ball", "brain")
        for click in ("first click", "refinement 1", "refinement 2", "refinement 3")
    ]
    assert all(float(r[2]) > 0 for r in ratios)


def test_a_folder_without_the_package_is_one_line(tmp_path) -> None:
    proc = run_bench("bench_versions.py", str(tmp_path))
    assert proc.returncode == 2
    assert "is not a src folder holding the sammed3d package" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_bench("bench_versions.py", str(tmp_path), "--pairs", "0")
    assert proc.returncode == 2 and "--pairs, --threads and --repeat must be >= 1" in proc.stderr
