"""``sammed3d predict``: a label map on the input grid, dataset scoring, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sammed3d import build_model, save_checkpoint
from sammed3d.cli import main
from sammed3d.io import Volume, read_volume, write_volume
from sammed3d.task.checkpoint import save_task_checkpoint
from tests.task.conftest import one_thread, tiny_task_model  # noqa: F401 - autouse fixture
from tests.training.conftest import write_nnunet_dataset, write_per_class_copy

OBLIQUE = np.array([[0.96, -0.28, 0.0], [0.28, 0.96, 0.0], [0.0, 0.0, 1.0]])


@pytest.fixture()
def task_checkpoint(tmp_path: Path) -> Path:
    return save_task_checkpoint(tiny_task_model(), tmp_path / "task.pth")


@pytest.fixture()
def image(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    img = (100 + 20 * rng.random((40, 34, 18))).astype(np.float32)
    img[10:25, 8:20, 4:12] += 400
    return write_volume(
        Volume(img, (1.1, 0.9, 2.5), (5.0, -20.0, 40.0), OBLIQUE), tmp_path / "ct.nrrd"
    )


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_predict_writes_labels_on_the_input_grid(tmp_path, image, task_checkpoint, capsys):
    out = tmp_path / "labels.nii.gz"
    argv = ["predict", "--checkpoint", str(task_checkpoint), str(image), "-o", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "classes 1=blob, 2=speck; encoder sam_med3d_tiny from scratch" in printed
    assert "modality: " in printed and "(from the model's training data)" in printed
    assert f"wrote {out}" in printed
    src, labels = read_volume(image), read_volume(out)
    assert labels.shape == src.shape and labels.array.dtype == np.uint8
    assert set(np.unique(labels.array)) <= {0, 1, 2}
    np.testing.assert_allclose(labels.spacing, src.spacing, rtol=1e-6)
    np.testing.assert_allclose(labels.origin, src.origin, atol=1e-4)
    np.testing.assert_allclose(labels.direction, src.direction, atol=1e-6)
    # the overwrite rule; the input is never replaced
    assert main(argv) == 2
    assert "exists; pass --overwrite" in _err(capsys)
    assert main([*argv, "--overwrite"]) == 0
    capsys.readouterr()
    same = ["predict", "--checkpoint", str(task_checkpoint), str(image), "-o", str(image)]
    assert main([*same, "--overwrite"]) == 2
    assert "refusing to overwrite the input file" in _err(capsys)


def test_predict_scores_a_dataset(tmp_path, task_checkpoint, capsys):
    data = write_nnunet_dataset(tmp_path / "Dataset001_Blobs", n_cases=2, shape=(40, 36, 32))
    out = tmp_path / "results"
    argv = ["predict", "--checkpoint", str(task_checkpoint), "--data", str(data), "-o", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "blob: Dice" in printed and "mean Dice over classes" in printed
    assert f" on 2 cases; results in {out}" in printed
    rows = (out / "per_case.csv").read_text().splitlines()
    assert rows[0] == "dataset,case,class,label,dice,nsd,gt_voxels,pred_voxels"
    assert len(rows) == 1 + 2 * 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"] == ["blob", "speck"] and summary["cases"] == 2
    assert summary["split"] == "auto" and summary["splits_read"] == ["train"]
    assert summary["encoder_origin"]["init"] == "scratch"
    assert 0.0 <= summary["per_class"]["blob"]["dice"]["mean"] <= 1.0
    assert (out / "dice_per_class.png").stat().st_size > 0
    assert len(list((out / "predictions").glob("*.nii.gz"))) == 2
    assert main(argv) == 2
    assert f"{out} already holds results (per_case.csv); pass --overwrite to replace them" in (
        _err(capsys)
    )


def test_bad_test_sets(tmp_path, task_checkpoint, capsys):
    """Scoring data the model does not fit: one line each; a class missing in a case is scored."""
    data = write_nnunet_dataset(tmp_path / "Dataset001_Blobs", n_cases=2, shape=(40, 36, 32))
    base = ["predict", "--checkpoint", str(task_checkpoint), "--data", str(data)]
    # a case without the class "speck": its row is there, with no ground-truth voxels
    label_file = data / "labelsTr" / "case_001.nii.gz"
    label = read_volume(label_file)
    write_volume(label.with_array(np.where(label.array == 2, 0, label.array)), label_file)
    assert main([*base, "-o", str(tmp_path / "r1")]) == 0
    capsys.readouterr()
    rows = (tmp_path / "r1" / "per_case.csv").read_text().splitlines()[1:]
    speck = [r.split(",") for r in rows if ",speck," in r]
    assert sorted(int(r[6]) for r in speck) == [0, 8]
    # a label value dataset.json does not declare
    write_volume(label.with_array(np.where(label.array == 2, 7, label.array)), label_file)
    assert main([*base, "-o", str(tmp_path / "r2")]) == 2
    assert not (tmp_path / "r2").exists()  # checked before the first prediction
    assert "case_001.nii.gz: label value 7 is not declared in the dataset's dataset.json" in _err(
        capsys
    )
    # a dataset of other classes
    meta = json.loads((data / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "liver": 1, "tumour": 2}
    (data / "dataset.json").write_text(json.dumps(meta))
    assert main([*base, "-o", str(tmp_path / "r3")]) == 2
    assert "declares none of the model's classes ['blob', 'speck']" in _err(capsys)


def test_checkpoint_kinds_are_not_mixed(tmp_path, image, task_checkpoint, capsys):
    sam = save_checkpoint(build_model("sam_med3d_tiny"), tmp_path / "sam.pth")
    argv = ["predict", "--checkpoint", str(sam), str(image), "-o", str(tmp_path / "o.nii.gz")]
    assert main(argv) == 2
    assert "is a promptable SAM-Med3D checkpoint, not a task model" in _err(capsys)
    argv = ["segment", str(image), "-p", "10", "10", "5", "--checkpoint", str(task_checkpoint)]
    assert main([*argv, "-o", str(tmp_path / "m.nii.gz"), "--no-extend"]) == 2
    assert "is a task-model checkpoint" in _err(capsys)
    assert main(["export", str(task_checkpoint), str(tmp_path / "x.pth")]) == 2
    assert "is a task-model checkpoint" in _err(capsys)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--data", "x"], "either an IMAGE or --data"),
        (["--overlap", "1.5"], "--overlap must be in"),
        (["--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_usage_errors_are_one_line(tmp_path, image, task_checkpoint, capsys, extra, match):
    argv = ["predict", "--checkpoint", str(task_checkpoint), str(image)]
    assert main([*argv, "-o", str(tmp_path / "o.nii.gz"), *extra]) == 2
    assert match in _err(capsys)
    assert not (tmp_path / "o.nii.gz").exists()


def test_missing_inputs_are_one_line(tmp_path, image, task_checkpoint, capsys):
    out = str(tmp_path / "o.nii.gz")
    assert main(["predict", "--checkpoint", str(tmp_path / "no.pth"), str(image), "-o", out]) == 2
    assert "task checkpoint not found" in _err(capsys)
    assert main(["predict", "--checkpoint", str(task_checkpoint), "nothing.nii.gz", "-o", out]) == 2
    _err(capsys)
    assert main(["predict", "--checkpoint", str(task_checkpoint), str(image), "-o", "x.png"]) == 2
    assert "must end in .nii.gz" in _err(capsys)
    assert main(["predict", "--checkpoint", str(task_checkpoint), "-o", out]) == 2
    assert "either an IMAGE or --data" in _err(capsys)


@pytest.mark.parametrize(
    ("values", "match"),
    [
        (np.uint8([0, 1, 2]), "only 3 distinct integer values: 0, 1, 2"),
        (np.float32([0, 0.999, 1]), "only 3 distinct values: 0, 0.999, 1"),  # a float mask
    ],
    ids=["labels", "float_mask"],
)
def test_a_label_map_given_as_the_image_is_refused(
    tmp_path, task_checkpoint, capsys, values, match
):
    mask = np.random.default_rng(0).choice(values, size=(20, 18, 12))
    path = write_volume(Volume(mask, (1.0, 1.0, 2.0)), tmp_path / "mask.nii.gz")
    out = tmp_path / "o.nii.gz"
    assert main(["predict", "--checkpoint", str(task_checkpoint), str(path), "-o", str(out)]) == 2
    err = _err(capsys)
    assert "mask.nii.gz: looks like a label map" in err and match in err
    assert not out.exists()


def test_info_describes_a_task_checkpoint(task_checkpoint, capsys):
    assert main(["info", "--checkpoint", str(task_checkpoint), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["checkpoint"]["kind"].startswith("task model")
    assert info["checkpoint"]["task"]["classes"] == ["blob", "speck"]


def test_a_case_whose_label_map_is_on_another_grid_is_skipped(tmp_path, task_checkpoint, capsys):
    """As `evaluate` does: the other cases are scored and the summary lists the skipped one
    (the run used to stop at it, after the cases before it, without per_case.csv)."""
    data = write_nnunet_dataset(tmp_path / "Dataset001_Blobs", n_cases=3, shape=(40, 36, 32))
    label_file = data / "labelsTr" / "case_001.nii.gz"
    label = read_volume(label_file)
    write_volume(Volume(np.asarray(label.array)[2:], label.spacing), label_file)
    out = tmp_path / "results"
    argv = ["predict", "--checkpoint", str(task_checkpoint), "--data", str(data), "-o", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"] == 2 and [s["case"] for s in summary["skipped"]] == ["case_001"]
    assert (
        "image shape (40, 36, 32) != label map shape (38, 36, 32)"
        in summary["skipped"][0]["reason"]
    )
    assert len((out / "per_case.csv").read_text().splitlines()) == 1 + 2 * 2
    printed = capsys.readouterr()
    assert "case 2/3 case_001 skipped" in printed.out + printed.err
    assert " on 2 cases (1 skipped); results in" in printed.out


def test_per_class_data_predicts_each_image_once(tmp_path, task_checkpoint, capsys):
    """The per-class layout lists each scan once per class folder: it was predicted once per
    class (4 predictions and "cases": 4 for 2 images). Scored as per class folders, the
    results are those of the same data as one nnU-Net label map per case."""
    data = write_nnunet_dataset(tmp_path / "Dataset001_Blobs", n_cases=2, shape=(40, 36, 32))
    per_class = write_per_class_copy(data, tmp_path / "per_class")
    base = ["predict", "--checkpoint", str(task_checkpoint), "--data"]
    assert main([*base, str(data), "-o", str(tmp_path / "nnunet")]) == 0
    capsys.readouterr()
    assert main([*base, str(per_class), "-o", str(tmp_path / "pc")]) == 0
    printed = capsys.readouterr()
    said = printed.out + printed.err
    assert "case 2/2 case_001: Dice blob" in said and "/4 " not in said
    assert " on 2 cases; results in" in printed.out
    per_case = (tmp_path / "pc" / "per_case.csv").read_text()
    assert per_case == (tmp_path / "nnunet" / "per_case.csv").read_text()
    assert len(per_case.splitlines()) == 1 + 2 * 2  # one row per image and class
    summary = json.loads((tmp_path / "pc" / "summary.json").read_text())
    expected = json.loads((tmp_path / "nnunet" / "summary.json").read_text())
    assert summary["cases"] == 2 and summary["skipped"] == []
    assert summary["per_class"] == expected["per_class"]
    assert summary["mean_dice"] == expected["mean_dice"]
    predictions = sorted(p.name for p in (tmp_path / "pc" / "predictions").iterdir())
    assert predictions == ["Blobs__case_000.nii.gz", "Blobs__case_001.nii.gz"]


def test_unscored_classes_are_said(tmp_path, task_checkpoint, capsys):
    """A model class the dataset does not declare and a scan without a class's mask file
    (per-class layout): one warning each, counts in summary.json, the mean names its classes."""
    data = write_nnunet_dataset(tmp_path / "Dataset001_Blobs", n_cases=2, shape=(40, 36, 32))
    per_class = write_per_class_copy(data, tmp_path / "per_class")
    for folder in ("imagesTr", "labelsTr"):
        (per_class / "speck" / "ct_Blobs" / folder / "case_001.nii.gz").unlink()
    base = ["predict", "--checkpoint", str(task_checkpoint), "--data"]
    assert main([*base, str(per_class), "-o", str(tmp_path / "a"), "--no-predictions"]) == 0
    printed = capsys.readouterr()
    assert "class 'speck' is not scored in 1 of 2 cases: they have no mask file" in printed.err
    assert "mean Dice over classes " in printed.out and "(1 of 2" not in printed.out
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["cases_without_mask"] == {"blob": 0, "speck": 1}
    assert summary["classes_not_scored"] == {}
    assert summary["per_class"]["speck"]["dice"]["n"] == 1
    # the dataset calls the speck "dot": the model's speck is not scored at all
    (per_class / "speck").rename(per_class / "dot")
    assert main([*base, str(per_class), "-o", str(tmp_path / "b"), "--no-predictions"]) == 0
    printed = capsys.readouterr()
    said = [line for line in printed.err.splitlines() if line.startswith("warning: ")]
    assert said == [
        "warning: model class 'speck' is not scored: the dataset declares no class of this "
        "name (it declares ['blob', 'dot']; classes are matched by name)"
    ]
    assert "mean Dice over classes (1 of 2: blob) " in printed.out
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert list(summary["classes_not_scored"]) == ["speck"]
    assert summary["cases_without_mask"] == {"blob": 0}


def test_a_gapped_dicom_series_is_refused_or_read_onto_true_positions(
    tmp_path, task_checkpoint, capsys
):
    from tests.volumes import write_dicom_series

    files, _ = write_dicom_series(tmp_path / "series", n=12, dz=2.5, shape=(30, 28))
    files[6].unlink()
    argv = ["predict", "--checkpoint", str(task_checkpoint), str(tmp_path / "series")]
    assert main([*argv, "-o", str(tmp_path / "a.nii.gz")]) == 2
    err = _err(capsys)
    assert "1 slice(s) missing?" in err and "--irregular-slices resample" in err
    out = tmp_path / "b.nii.gz"
    assert main([*argv, "-o", str(out), "--irregular-slices", "resample"]) == 0
    labels = read_volume(out)
    assert labels.shape == (28, 30, 12) and labels.spacing[2] == pytest.approx(2.5)
