"""Error paths of benchmarks/bench_synthesis.py: one line on stderr, exit 2, before any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_synthesis.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True)


def test_missing_training_data_is_named(tmp_path: Path) -> None:
    proc = _run("--data", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "shape_bank.npz is missing: run tools/build_demo_data.py" in proc.stderr


def test_bad_device_is_one_line(tmp_path: Path) -> None:
    proc = _run("--device", "gpu0", "--data", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "--device 'gpu0' is not a torch device" in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_device_is_one_line(tmp_path: Path) -> None:
    proc = _run("--device", "cuda", "--data", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "no CUDA device" in proc.stderr
