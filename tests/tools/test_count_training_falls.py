"""tools/count_training_falls.py: training's click loop on generated crops, Dice per click and
the later clicks that lowered it; bad input in one line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from sammed3d import build_model, save_checkpoint

TOOL = Path(__file__).resolve().parents[2] / "tools" / "count_training_falls.py"
TINY = [
    "model.name=sam_med3d_tiny_dense",
    "data.shape_bank=null",
    "data.anatomy=null",
    "data.anatomy_fraction=0",
    "data.synthetic_per_epoch=4",
]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True)


def test_counts_falls_over_every_later_click(tmp_path: Path) -> None:
    ckpt = tmp_path / "tiny.pth"
    save_checkpoint(build_model("sam_med3d_tiny_dense"), ckpt)
    proc = _run(str(ckpt), *TINY, "--batches", "2", "--clicks", "3")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    # default_model: batch 2, two targets per crop -> 8 targets, 2 later clicks each
    assert lines[0] == "targets: 8 (2 batches of 2 crops)"
    dice = [float(v) for v in lines[1].removeprefix("mean Dice per click: ").split(" / ")]
    assert len(dice) == 3 and all(0.0 <= d <= 1.0 for d in dice)
    m = re.fullmatch(r"later clicks lowering Dice by > 0\.05: (\d+) of 16 \(.*%\)", lines[2])
    assert m is not None, lines[2]
    # the same crops and clicks again: the same count
    again = _run(str(ckpt), *TINY, "--batches", "2", "--clicks", "3")
    assert again.stdout == proc.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["default", "--batches", "0"], "--batches and --threads must be >= 1"),
        (["default", "--clicks", "1"], "--clicks >= 2"),
        (["missing.pth", *TINY], "cannot load checkpoint missing.pth"),
        (["default", "train.nope=1"], "train.nope"),
        (["default", *TINY], "pass model.name="),
    ],
)
def test_bad_input_is_one_line(args: list[str], expected: str) -> None:
    proc = _run(*args)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert expected in lines[-1], proc.stderr
    assert not any("Traceback" in line for line in lines)
