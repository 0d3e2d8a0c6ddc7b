"""Error paths of tools/probe_click_rules.py: one line on stderr, non-zero exit, before any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "probe_click_rules.py"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "usage: "),
        (["model.pth", "3"], "usage: "),
        (["model.pth", "0", "model"], "N must be a positive whole number"),
        (["model.pth", "three", "model"], "N must be a positive whole number"),
        (["model.pth", "3", "model", "ball"], "unknown rule 'ball'"),
        (["model.pth", "3", "best"], "unknown rule 'best'"),
        (["missing.pth", "3", "model"], "cannot load checkpoint missing.pth"),
    ],
)
def test_bad_input_gives_one_line(tmp_path: Path, args: list[str], expected: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(TOOL), *args], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert expected in lines[0]
