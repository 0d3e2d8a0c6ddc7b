"""``sammed3d metrics``: per-label JSON, empty-label policy, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
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
    # one side empty: the image diagonal, the documented worst case (never inf/null)
    diagonal = float(np.linalg.norm(np.multiply((20, 18, 12), SPACING)))
    assert report["hd95_worst_case_mm"] == pytest.approx(diagonal)
    assert labels["5"]["hd95"] == pytest.approx(diagonal)
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


def test_a_missed_structure_does_not_improve_the_hd95_mean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt = np.zeros((20, 18, 12), np.uint8)
    gt[2:6, 2:7, 2:7] = 1
    gt[10:15, 10:14, 4:9] = 2
    pred = np.zeros_like(gt)
    pred[3:6, 2:7, 2:7] = 1  # label 1 close (HD95 1 mm), label 2 missed entirely
    p, g = _write(tmp_path / "p.nii.gz", pred), _write(tmp_path / "g.nii.gz", gt)
    assert main(["metrics", "--pred", p, "--gt", g]) == 0
    report = json.loads(capsys.readouterr().out)
    worst = report["hd95_worst_case_mm"]
    assert report["labels"]["2"]["hd95"] == pytest.approx(worst)
    mean = report["mean_over_gt_labels"]["hd95"]
    assert mean["n"] == 2
    assert mean["mean"] == pytest.approx((report["labels"]["1"]["hd95"] + worst) / 2)
    assert mean["mean"] > report["labels"]["1"]["hd95"]  # the miss makes it worse, not better


def test_images_are_refused_as_label_maps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    gt = _write(tmp_path / "gt.nii.gz", (rng.random((20, 18, 12)) > 0.5).astype(np.uint8))
    ct = rng.normal(0, 400, (20, 18, 12)).astype(np.int16)  # a CT: negative HU
    ct_path = tmp_path / "ct.nii.gz"
    write_volume(Volume(ct, SPACING, (5.0, 0.0, -3.0)), ct_path)
    mri = (rng.random((20, 18, 12)) * 300).astype(np.float32)  # non-integer intensities
    mri_path = tmp_path / "mri.nrrd"
    write_volume(Volume(mri, SPACING, (5.0, 0.0, -3.0)), mri_path)
    many = rng.integers(0, 3000, (20, 18, 12)).astype(np.uint16)  # thousands of "labels"
    many_path = tmp_path / "many.mha"
    write_volume(Volume(many, SPACING, (5.0, 0.0, -3.0)), many_path)
    for image, match in ((ct_path, "negative values"), (mri_path, "non-integer")):
        for flag in ("--pred", "--gt"):
            other = "--gt" if flag == "--pred" else "--pred"
            assert main(["metrics", flag, str(image), other, gt]) == 2
            err = capsys.readouterr().err.strip()
            assert err.startswith("error: ") and "\n" not in err
            assert "not a label map" in err and match in err and str(image) in err
    assert main(["metrics", "--pred", str(many_path), "--gt", gt]) == 2
    assert "distinct non-zero values" in capsys.readouterr().err
    # with explicit labels the user takes responsibility for a many-valued map
    assert main(["metrics", "--pred", str(many_path), "--gt", gt, "--labels", "1"]) == 0


def test_output_file_follows_the_overwrite_rule(
    files: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pred, gt = files
    out = tmp_path / "m.json"
    out.write_text("precious")
    assert main(["metrics", "--pred", pred, "--gt", gt, "--output", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_text() == "precious"
    assert main(["metrics", "--pred", pred, "--gt", gt, "--output", str(out), "--overwrite"]) == 0
    assert json.loads(out.read_text())["labels"]
    assert main(["metrics", "--pred", pred, "--gt", gt, "--output", gt, "--overwrite"]) == 2
    assert "input" in capsys.readouterr().err


def test_output_into_a_closed_pipe_is_not_a_traceback(tmp_path: Path) -> None:
    """``sammed3d metrics ... | head -c 5``: no BrokenPipeError traceback, work finished."""
    import fcntl
    import os

    labels = np.zeros((24, 24, 8), np.uint8)  # 72 labels: ~10 kB of JSON
    for n, (i, j, k) in enumerate(np.ndindex(6, 6, 2)):
        labels[4 * i : 4 * i + 3, 4 * j : 4 * j + 3, 4 * k : 4 * k + 3] = n + 1
    gt = str(write_volume(Volume(labels, SPACING), tmp_path / "gt.nii.gz"))
    pred = str(write_volume(Volume(np.roll(labels, 1, axis=0), SPACING), tmp_path / "p.nii.gz"))
    out = tmp_path / "m.json"
    code = (
        "import sys; from sammed3d.cli import main; "
        f"sys.exit(main(['metrics', '--pred', {pred!r}, '--gt', {gt!r}, '--no-hd95', "
        f"'--output', {str(out)!r}]))"
    )
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)  # smaller than the output
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=write_end, stderr=subprocess.PIPE)
    os.close(write_end)
    first = os.read(read_end, 5)  # read a little, then go away like `head`
    os.close(read_end)
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert first == b'{\n  "'
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert len(json.loads(out.read_text())["labels"]) == 72  # the work was finished


def test_an_integer_intensity_image_is_refused_as_either_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An MRI stored as uint8 (integers, ~250 values) is no ground truth: refused, naming the
    flag, as a float image is."""
    z, y, x = np.mgrid[0:20, 0:18, 0:12]
    rng = np.random.default_rng(1)
    mri = np.clip(60 + 6 * z + 4 * y + rng.normal(0, 8, z.shape), 0, 255).astype(np.uint8)
    mri_path = _write(tmp_path / "t1.nii.gz", mri)
    mask = np.zeros_like(mri)
    mask[5:10, 5:10, 3:8] = 1
    mask_path = _write(tmp_path / "mask.nii.gz", mask)
    for flag, other in (("--gt", "--pred"), ("--pred", "--gt")):
        assert main(["metrics", other, mask_path, flag, mri_path]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {flag} ({mri_path}) does not look like a label map")
        assert "an intensity image?" in err and "\n" not in err


def test_a_many_label_atlas_is_still_a_label_map(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    atlas = np.zeros((20, 18, 12), np.uint8)
    for n, (i, j, k) in enumerate(np.ndindex(5, 6, 3)):  # 90 structures of 4x3x4 voxels
        atlas[4 * i : 4 * i + 4, 3 * j : 3 * j + 3, 4 * k : 4 * k + 4] = n + 1
    path = _write(tmp_path / "atlas.nii.gz", atlas)
    assert main(["metrics", "--pred", path, "--gt", path, "--no-hd95"]) == 0
    assert len(json.loads(capsys.readouterr().out)["labels"]) == 90


def test_labels_in_common_or_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    box = np.zeros((20, 18, 12), np.uint8)
    box[5:10, 5:10, 3:8] = 1
    pred = _write(tmp_path / "pred.nii.gz", box)  # the structure written as label 1
    gt = _write(tmp_path / "gt.nii.gz", box * 3)  # the atlas calls it label 3
    assert main(["metrics", "--pred", pred, "--gt", gt, "--no-hd95"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["labels"]["3"]["dice"] == 0.0
    assert report["note"] == (
        "--pred and --gt have no label in common: --pred holds label 1, --gt holds label 3; "
        "a structure must have the same value in both files to be compared (relabel one)"
    )
    assert main(["metrics", "--pred", pred, "--gt", pred, "--no-hd95"]) == 0
    assert "note" not in json.loads(capsys.readouterr().out)


def test_a_requested_label_in_neither_file_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--labels 7 (a typo for 1) scores nulls as "both empty" would: the note says so."""
    box = np.zeros((20, 18, 12), np.uint8)
    box[5:10, 5:10, 3:8] = 1
    path = _write(tmp_path / "m.nii.gz", box)
    assert main(["metrics", "--pred", path, "--gt", path, "--labels", "7", "--no-hd95"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert captured.err == f"warning: {report['note']}\n"
    assert report["labels"]["7"]["dice"] is None
    assert report["note"] == (
        "--labels 7: in neither file (--pred holds label 1, --gt holds label 1); their "
        "metrics are null"
    )
    assert main(["metrics", "--pred", path, "--gt", path, "--labels", "1", "--no-hd95"]) == 0
    assert "note" not in json.loads(capsys.readouterr().out)


def test_a_one_label_mask_against_a_multi_label_truth_gets_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``segment`` mask (label 1) against an atlas of labels 1-3: labels 2 and 3 are misses
    in the mean; stderr says so and how to score the one structure (the JSON is unchanged)."""
    gt = np.zeros((20, 18, 12), np.uint8)
    gt[2:6, 2:7, 2:7] = 1
    gt[10:15, 10:14, 4:9] = 2
    gt[16:19, 2:6, 2:6] = 3
    pred = (gt == 1).astype(np.uint8)
    p, g = _write(tmp_path / "mask.nii.gz", pred), _write(tmp_path / "atlas.nii.gz", gt)
    assert main(["metrics", "--pred", p, "--gt", g, "--no-hd95"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["labels"]["1"]["dice"] == 1.0
    assert report["mean_over_gt_labels"]["dice"]["mean"] == pytest.approx(1 / 3)
    assert "note" not in report
    assert captured.err == (
        "note: --pred holds only label 1, --gt holds labels 1, 2, 3: labels 2, 3 count as "
        "misses in mean_over_gt_labels; to score the one structure pass --labels 1 (a mask of "
        "another --gt structure: write it with that value, `sammed3d segment ... --label N`, "
        "and pass --labels N)\n"
    )
    # as the note says: --labels 1 scores the structure alone, without a note
    assert main(["metrics", "--pred", p, "--gt", g, "--no-hd95", "--labels", "1"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["mean_over_gt_labels"]["dice"]["mean"] == 1.0
    assert captured.err == ""
    # several labels in both files, or one in each: nothing to say
    for other in (g, p):
        assert main(["metrics", "--pred", other, "--gt", other, "--no-hd95"]) == 0
        assert capsys.readouterr().err == ""
    # a structure asked for that the mask does not hold (it was written as 1): said, not a
    # silent 0 (2026-12-03 trial: --labels 2 against a label-1 mask)
    assert main(["metrics", "--pred", p, "--gt", g, "--no-hd95", "--labels", "2"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["labels"]["2"]["dice"] == 0.0
    assert captured.err == (
        "note: --labels 2: in --gt but not in --pred (it holds label 1), so they score 0; a mask "
        "written with another value scores under that value (segment --label N writes it as N)\n"
    )
