"""``sammed3d prepare`` through ``cli.main``: exit codes, output files, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sammed3d.cli import main
from sammed3d.io import Volume, write_volume


def _dataset(root: Path) -> Path:
    ds = root / "Dataset007_Spleen"
    (ds / "imagesTr").mkdir(parents=True)
    meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "Spleen": 1, "tiny": 2}}
    (ds / "dataset.json").write_text(json.dumps(meta))
    image = np.full((32, 32, 32), -1000.0, np.float32)
    image[2:30, 2:30, :] = 50.0
    label = np.zeros((32, 32, 32), np.uint8)
    label[8:24, 8:24, 8:24] = 1
    label[26:29, 26:29, 26:29] = 2
    write_volume(Volume(image, (1.5,) * 3), ds / "imagesTr" / "s1_0000.nii.gz")
    write_volume(Volume(label, (1.5,) * 3), ds / "labelsTr" / "s1.nii.gz")
    return ds


def test_prepare_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = _dataset(tmp_path / "raw")
    out = tmp_path / "out"
    argv = ["prepare", str(ds), "--output", str(out), "--no-progress", "--no-histograms"]
    assert main([*argv, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["cases"], summary["kept"], summary["dropped"]) == (1, 1, 1)
    assert (out / "spleen" / "ct_Spleen" / "labelsTr" / "s1.nii.gz").is_file()
    assert not list(out.glob("report_*.png"))
    records = [
        json.loads(line)
        for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert {(r["class_name"], r["status"], r["rule"]) for r in records} == {
        ("spleen", "kept", None),
        ("tiny", "dropped", "min_volume"),
    }
    # Resumed run; then rules from the command line change the outcome.
    assert main(argv) == 0
    assert "1 resumed" in capsys.readouterr().out
    assert (
        main([*argv, "--min-volume", "10", "--min-extent", "1", "--max-background", "1", "--json"])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["kept"] == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--spacing", "1", "2"], "1 or 3 values"),
        (["--paired", " , "], "--paired"),
        (["--workers", "0"], "workers"),
        (["--max-background", "2"], "max_background_fraction"),
    ],
)
def test_prepare_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    ds = _dataset(tmp_path / "raw")
    code = main(["prepare", str(ds), "-o", str(tmp_path / "out"), "--no-progress", *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_prepare_missing_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prepare", str(tmp_path / "nope"), "-o", str(tmp_path / "out")]) == 2
    assert "source dataset not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
