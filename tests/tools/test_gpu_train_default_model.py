"""tools/gpu_train_default_model.py: bad input is refused in one line before any work, and
the probe's rate is read from the run log."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "gpu_train_default_model.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_train_default_model", TOOL)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "train"
    d.mkdir()
    (d / "shape_bank.npz").write_bytes(b"")
    (d / "anatomy_mni152.npz").write_bytes(b"")
    return d


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--init", "missing.pth"], "--init missing.pth is not a file"),
        (["--variant", "a", "train.seed"], "overrides must be KEY=VALUE, got 'train.seed'"),
        (["--variant", "x/y", ""], "expected a plain name"),
        (["--deadline-seconds", "100"], "leaves no time after a 70 s probe"),
    ],
)
def test_bad_input_gives_one_line(
    tmp_path: Path, data_dir: Path, extra: list[str], expected: str
) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(TOOL), str(out), "--data-dir", str(data_dir), *extra],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and expected in proc.stderr, proc.stderr
    assert not out.exists()  # nothing was started or created


def test_an_earlier_call_is_not_overwritten(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "out"
    (out / "runs" / "probe_base").mkdir(parents=True)
    marker = out / "runs" / "probe_base" / "log.jsonl"
    marker.write_text("kept\n")
    proc = subprocess.run(
        [sys.executable, str(TOOL), str(out), "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "probe_base exists (an earlier call?)" in proc.stderr
    assert marker.read_text() == "kept\n"


def test_missing_training_data_is_named(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(TOOL), str(tmp_path / "out"), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "shape_bank.npz is missing: run tools/build_demo_data.py" in proc.stderr


def test_rate_is_the_last_logged_window(tmp_path: Path) -> None:
    rate = _module()._rate
    assert rate(tmp_path) is None  # no log yet
    log = tmp_path / "log.jsonl"
    log.write_text("")
    assert rate(tmp_path) is None
    log.write_text(json.dumps({"step": 5, "samples_per_second": 1.5}) + "\n")
    assert rate(tmp_path) == 1.5  # one window (with start-up): used, an underestimate
    with log.open("a") as fh:
        fh.write(json.dumps({"step": 10, "samples_per_second": 4.0}) + "\n\n")
    assert rate(tmp_path) == 4.0


@pytest.mark.parametrize(
    ("returncode", "stopped_by_us", "crashed"),
    [
        (0, False, False),  # finished its probe
        (143, False, False),  # the trainer's own exit after SIGTERM: work saved
        (-15, False, False),  # SIGTERM before the trainer's handler was set
        (143, True, False),  # stopped by the script at the time limit (2026-12-03: was "failed")
        (-9, True, False),
        (1, False, True),  # an exception: bf16 is the likely cause
        (-11, False, True),
    ],
)
def test_a_stopped_probe_is_not_a_crash(
    returncode: int, stopped_by_us: bool, crashed: bool
) -> None:
    assert _module()._probe_crashed(returncode, stopped_by_us) is crashed
