"""Scoring a task model on a labelled dataset: every layout, each image predicted once."""

from __future__ import annotations

from sammed3d.io import Volume
from sammed3d.task import TaskPredictor, evaluate_task
from tests.training.conftest import write_nnunet_dataset, write_per_class_copy


class CountingPredictor(TaskPredictor):
    """Counts the volumes it predicts."""

    calls = 0

    def predict(self, volume: Volume, *, modality: str | None = None) -> Volume:
        type(self).calls += 1
        return super().predict(volume, modality=modality)


def test_per_class_folders_score_like_their_label_maps(tmp_path, task_checkpoint):
    data = write_nnunet_dataset(tmp_path / "Dataset001_Blobs", n_cases=2, shape=(40, 36, 32))
    per_class = write_per_class_copy(data, tmp_path / "per_class")
    predictor = CountingPredictor.from_checkpoint(task_checkpoint)
    expected = evaluate_task(predictor, data, tmp_path / "nnunet")
    CountingPredictor.calls = 0
    summary = evaluate_task(predictor, per_class, tmp_path / "pc")
    assert CountingPredictor.calls == 2  # once per image, not once per class folder
    assert summary["cases"] == 2 and summary["skipped"] == []
    assert summary["per_class"] == expected["per_class"]
    rows = (tmp_path / "pc" / "per_case.csv").read_text()
    assert rows == (tmp_path / "nnunet" / "per_case.csv").read_text()
    assert len(rows.splitlines()) == 1 + 2 * 2  # one row per image and class
    predictions = sorted(p.name for p in (tmp_path / "pc" / "predictions").iterdir())
    assert predictions == ["Blobs__case_000.nii.gz", "Blobs__case_001.nii.gz"]


def test_unscored_classes_and_cases_are_counted(tmp_path, caplog):
    """A model class the dataset does not declare, and the scans of a per-class layout
    without a mask file for a class: not scored, each said once and in summary.json."""
    import json
    import logging

    from sammed3d.task.checkpoint import save_task_checkpoint
    from tests.task.conftest import tiny_task_model

    checkpoint = save_task_checkpoint(
        tiny_task_model(classes=("blob", "speck", "kidney")), tmp_path / "task.pth"
    )
    data = write_nnunet_dataset(tmp_path / "Dataset001_Blobs", n_cases=3, shape=(40, 36, 32))
    per_class = write_per_class_copy(data, tmp_path / "per_class")
    for case in ("case_001", "case_002"):  # as if prepare had dropped these specks
        for folder in ("imagesTr", "labelsTr"):
            (per_class / "speck" / "ct_Blobs" / folder / f"{case}.nii.gz").unlink()
    predictor = TaskPredictor.from_checkpoint(checkpoint)
    with caplog.at_level(logging.INFO, logger="sammed3d"):
        summary = evaluate_task(predictor, per_class, tmp_path / "out", write_predictions=False)
    assert summary["cases"] == 3
    assert list(summary["classes_not_scored"]) == ["kidney"]
    assert "declares no class of this name" in summary["classes_not_scored"]["kidney"]
    assert summary["cases_without_mask"] == {"blob": 0, "speck": 2}
    assert summary["per_class"]["speck"]["dice"]["n"] == 1
    assert summary["per_class"]["kidney"]["dice"]["n"] == 0
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk["cases_without_mask"] == {"blob": 0, "speck": 2}
    assert on_disk["classes_not_scored"] == summary["classes_not_scored"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("warning: model class 'kidney' is not scored: the dataset ")
    assert "it declares ['blob', 'speck']" in warnings[0]
    assert warnings[1].startswith(
        "warning: class 'speck' is not scored in 2 of 3 cases: they have no mask file"
    )


def test_existing_results_are_refused_in_the_callers_words(tmp_path):
    """The API's advice names ``overwrite=True``; the command line prints ``--overwrite``."""
    import pytest

    from sammed3d._wording import cli_wording
    from sammed3d.task.evaluation import check_output_dir

    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(FileExistsError) as exc:
        check_output_dir(tmp_path)
    held = f"{tmp_path} already holds results (summary.json)"
    assert str(exc.value) == f"{held}; pass overwrite=True to replace them"
    assert cli_wording(exc.value) == f"{held}; pass --overwrite to replace them"
    assert check_output_dir(tmp_path, overwrite=True) == tmp_path


def test_results_are_refused_among_the_images(tmp_path, task_checkpoint):
    """``predict --data D -o D/imagesTr`` wrote the predicted label maps among the images
    (which a later discovery would take for cases)."""
    import pytest

    data = write_nnunet_dataset(tmp_path / "Dataset001_Blobs", n_cases=1, shape=(40, 36, 32))
    before = sorted(data.rglob("*"))
    predictor = TaskPredictor.from_checkpoint(task_checkpoint)
    for folder in (data, data / "imagesTr", data / "labelsTr"):
        with pytest.raises(ValueError, match="expected a folder of its own for the results"):
            evaluate_task(predictor, data, folder)
    assert sorted(data.rglob("*")) == before
