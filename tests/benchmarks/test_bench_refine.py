"""benchmarks/bench_refine.py runs the bundled settings and each rule off on both objects and
reports their ratios."""

from __future__ import annotations

import re

from tests.benchmarks import run_bench


def test_each_rule_off_is_compared_with_the_bundled_settings() -> None:
    proc = run_bench("bench_refine.py", "--threads", "1", "--repeat", "1")
    assert proc.returncode == 0, proc.stderr
    assert re.search(
        r"^bundled \(refinement 3 mm, guard 0.4, first pick edges\), brain: first click",
        proc.stdout,
        re.M,
    )
    assert re.search(r"^refinement off, ball: first click median", proc.stdout, re.M)
    # each refinement click with the ROIs the object spans before it: the "brain" is
    # larger than one ROI at its first click
    rois = re.search(
        r"^bundled .*, brain: .*clicks 1 / 2 / 3: \d+ / \d+ / \d+ ms, the object on "
        r"([\d.]+) / [\d.]+ / [\d.]+ ROIs before them",
        proc.stdout,
        re.M,
    )
    assert rois and float(rois.group(1)) > 1
    assert re.search(r"^guard off, brain: first click median", proc.stdout, re.M)
    assert re.search(r"^edge pick off, ball: first click median", proc.stdout, re.M)
    assert re.search(r"^fine zoom on, ball: first click median", proc.stdout, re.M)
    ratios = re.findall(r"ratio bundled / ([\w ]+) off, (\w+): first click ([\d.]+)x", proc.stdout)
    assert [r[:2] for r in ratios] == [
        ("refinement", "ball"),
        ("refinement", "brain"),
        ("guard", "ball"),
        ("guard", "brain"),
        ("edge pick", "ball"),
        ("edge pick", "brain"),
    ]
    assert all(float(r[2]) > 0 for r in ratios)
    checks = re.findall(
        r"ratio ([\w ]+) on / bundled, (\w+): first click [\d.]+x, refinement ([\d.]+)x",
        proc.stdout,
    )
    assert [c[:2] for c in checks] == [
        ("edge check", "ball"),
        ("edge check", "brain"),
        ("fine zoom", "ball"),
        ("fine zoom", "brain"),
    ]
    assert all(float(c[2]) > 0 for c in checks)
    # the ball's rim click, with the rim edit on (bundled) and off
    assert re.search(r"^bundled .*, ball: rim click median \d+ ms$", proc.stdout, re.M)
    assert re.search(r"^rim edit off, ball: rim click median \d+ ms$", proc.stdout, re.M)
    rim = re.search(r"^ratio bundled / rim edit off, ball: rim click ([\d.]+)x$", proc.stdout, re.M)
    assert rim and float(rim.group(1)) > 0
    # the second refinement click (negative), with the click bounds on (not bundled)
    bounds = re.findall(
        r"^ratio click bounds on / bundled, (\w+): negative click ([\d.]+)x$", proc.stdout, re.M
    )
    assert [b[0] for b in bounds] == ["ball", "brain"] and all(float(b[1]) > 0 for b in bounds)


def test_bad_repeat_is_one_line() -> None:
    proc = run_bench("bench_refine.py", "--repeat", "0")
    assert proc.returncode == 2 and "--repeat and --threads must be >= 1" in proc.stderr
