"""``sammed3d metrics``: per-label JSON, empty-label policy, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sammed3d.cli import main
from sammed3d.io import Volume, write_volume

SPACING = (1.0, 1.5, 2.0)


def _write(path: Path, array: np.ndarray, spacing: tuple[float, ...] = SPACING) -> str:
    write_volume(Volume(array.astype(np.uint8), spacing, (5.0, 0.0, -3.0)), path)
    return str(path)


@pytest.fixture
def files(tmp_path: Path) -> tuple[str, str]:
    gt = np.zeros((20, 18, 12), np.uint8)
    gt[2:6, 2:7, 2:7] = 1  # 4 x 5 x 5 = 100 voxels
    gt[10:15, 10:14, 4:9] = 3  # label 3
    pred = np.zeros_like(gt)
    pred[4:8, 2:7, 2:7] = 1  # 100 voxels, 50 overlap: Dice 0.5
    pred[10:15, 10:14, 4:9] = 3  # perfect
    pred[17:19, 1:3, 1:3] = 5  # label only in the prediction
    return _write(tmp_path / "pred.nii.gz", pred), _write(tmp_path / "gt.nii.gz", gt)


def test_per_label_json(files: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    pred, gt = files
    assert main(["metrics", "--pred", pred, "--gt", gt, "--tolerance-mm", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    labels = report["labels"]
    assert sorted(labels) == ["1", "3", "5"]
    assert labels["1"]["dice"] == pytest.approx(0.5)
    assert labels["1"]["iou"] == pytest.approx(1 / 3)
    assert labels["1"]["gt_voxels"] == labels["1"]["pred_voxels"] == 100
    # shift of 2 voxels along a 1 mm axis: all surface within the 2 mm tolerance
    assert labels["1"]["nsd"] == pytest.approx(1.0)
    assert labels["1"]["hd95"] == pytest.approx(2.0)
    assert labels["3"] == {
        "gt_voxels": 100,
        "pred_voxels": 100,
        "dice": 1.0,
        "iou": 1.0,
        "nsd": 1.0,
        "hd95": 0.0,
    }
    assert labels["5"]["gt_voxels"] == 0 and labels["5"]["dice"] == 0.0
    assert labels["5"]["hd95"] is None  # inf -> null in strict JSON
    assert report["spacing_mm"] == list(SPACING)
    assert report["mean_over_gt_labels"]["dice"]["mean"] == pytest.approx(0.75)
    assert report["mean_over_gt_labels"]["dice"]["n"] == 2


def test_labels_option_and_output_file(
    files: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pred, gt = files
    out = tmp_path / "m.json"
    argv = ["metrics", "--pred", pred, "--gt", gt, "--labels", "3,7", "--no-hd95"]
    assert main([*argv, "--output", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text(encoding="utf-8")) == report
    assert sorted(report["labels"]) == ["3", "7"]
    assert "hd95" not in report["labels"]["3"]
    assert report["labels"]["7"]["dice"] is None  # both empty: NaN -> null


def test_errors_are_one_line(
    files: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pred, gt = files
    assert main(["metrics", "--pred", str(tmp_path / "missing.nii.gz"), "--gt", gt]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "missing.nii.gz" in err and "\n" not in err

    other = _write(tmp_path / "other.nii.gz", np.zeros((20, 18, 12)), spacing=(1.0, 1.0, 1.0))
    assert main(["metrics", "--pred", other, "--gt", gt]) == 2
    err = capsys.readouterr().err.strip()
    assert "spacing" in err and "\n" not in err

    small = _write(tmp_path / "small.nii.gz", np.zeros((10, 18, 12)))
    assert main(["metrics", "--pred", small, "--gt", gt]) == 2
    assert "shape" in capsys.readouterr().err

    assert main(["metrics", "--pred", pred, "--gt", gt, "--tolerance-mm", "-1"]) == 2
    assert "tolerance" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exc:
        main(["metrics", "--pred", pred, "--gt", gt, "--labels", "0"])
    assert exc.value.code == 2
