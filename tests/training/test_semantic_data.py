"""Semantic training data: classes by name, label checks, class-balanced crops."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from sammed3d.io import Volume, read_volume, write_volume
from sammed3d.training import ConfigError, load_config
from sammed3d.training.data import sample_rng
from sammed3d.training.semantic_data import (
    IGNORE_LABEL,
    build_semantic_cases,
    build_semantic_dataset,
    crop_case,
    resolve_task_data,
)
from tests.task.conftest import one_thread  # noqa: F401 - autouse fixture

from .conftest import tiny_overrides, write_nnunet_dataset


def _cfg(tmp_path: Path, roots: list[Path], *extra: str):
    roots_text = ",".join(str(r) for r in roots)
    return load_config(
        "tiny_cpu",
        tiny_overrides(
            tmp_path / "run", "task.kind=semantic", f"data.roots=[{roots_text}]", *extra
        ),
    )


def _set_dataset_labels(root: Path, labels: dict[str, int]) -> None:
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"] = {"background": 0, **labels}
    (root / "dataset.json").write_text(json.dumps(meta))


def test_cases_classes_and_crops(tmp_path, nnunet_dataset):
    cfg = _cfg(tmp_path, [nnunet_dataset], "task.samples_per_epoch=6")
    dataset = build_semantic_dataset(cfg, show_progress=False)
    assert len(dataset) == 6 and dataset.num_classes == 2
    case = dataset.cases[0]
    assert case.lut[:3] == (0, 1, 2) and case.class_voxels[1] == 8  # the 2x2x2 speck
    sample = dataset[(0, 3)]
    assert sample["image"].shape == (1, 64, 64, 64) and sample["image"].dtype == torch.float32
    assert sample["label"].dtype == torch.int64
    assert set(sample["label"].unique().tolist()) <= {IGNORE_LABEL, 0, 1, 2}
    again = dataset[(0, 3)]
    assert torch.equal(sample["image"], again["image"]) and torch.equal(
        sample["label"], again["label"]
    )
    assert not torch.equal(dataset[(1, 3)]["image"], sample["image"])  # other epoch, other crop


def test_crops_beyond_the_image_are_padded_with_air_and_ignored(tmp_path, nnunet_dataset):
    """The 48x44x40 cases are smaller than the 64^3 crop. Padding looks like the case's air
    (raw -1000 after the CT clamp), not raw 0 (soft tissue), and is labelled "ignore"."""
    cfg = _cfg(
        tmp_path,
        [nnunet_dataset],
        "task.samples_per_epoch=4",
        "data.flip_prob=0",
        "data.intensity_aug_prob=0",
    )
    dataset = build_semantic_dataset(cfg, show_progress=False)
    assert [c.pad for c in dataset.cases] == [-1000.0] * 4  # the case minimum (air)
    for index in range(4):
        sample = dataset[(0, index)]
        which, _ = dataset.choose(sample_rng(cfg.train.seed, 0, index))
        case = dataset.cases[which]
        air = torch.tensor((-1000.0 - case.mean) / case.std, dtype=torch.float32)
        outside = sample["label"] == IGNORE_LABEL
        assert int(outside.sum()) == 64**3 - int((sample["label"] >= 0).sum())
        assert int((sample["label"] >= 0).sum()) <= 48 * 44 * 40
        assert outside.float().mean() > 0.3
        assert torch.equal(sample["image"][outside], air.expand(int(outside.sum())))


def test_crop_case_values():
    image = np.arange(4 * 4 * 4, dtype=np.float32).reshape(4, 4, 4) + 10.0
    label = np.zeros((4, 4, 4), np.uint8)
    label[0, 0, 0], label[3, 3, 3] = 1, 2
    lut = (0, 2, 0)  # value 1 is output class 2; value 2 is background (not chosen)
    img, lab = crop_case(image, label, lut, (1.5, 1.5, 1.5), 8, pad=-7.0)
    assert img.shape == lab.shape == (8, 8, 8) and lab.dtype == np.int64
    inside = (slice(2, 6),) * 3  # the 4^3 case sits in the middle of the 8^3 crop
    np.testing.assert_array_equal(img[inside], image)
    assert int((lab == IGNORE_LABEL).sum()) == 8**3 - 4**3
    assert set(np.unique(img[lab == IGNORE_LABEL])) == {-7.0}
    assert lab[2, 2, 2] == 2 and lab[5, 5, 5] == 0
    assert int((lab == 0).sum()) == 4**3 - 1


def test_a_cache_of_an_older_version_is_refreshed(tmp_path, nnunet_dataset):
    cfg = _cfg(tmp_path, [nnunet_dataset])
    cases, _ = build_semantic_cases(cfg, show_progress=False)
    stats = Path(cases[0].stats)
    with np.load(stats) as npz:  # a version-1 file: no padding intensity
        old = {k: npz[k] for k in npz.files if k != "pad"}
    old["version"] = np.array(1)
    with open(stats, "wb") as fh:
        np.savez(fh, **old)
    cases, _ = build_semantic_cases(cfg, show_progress=False)
    assert cases[0].pad == -1000.0


def test_crops_are_class_balanced(tmp_path):
    """The 8-voxel class is in about half the crops when a class is drawn uniformly."""
    nnunet_dataset = write_nnunet_dataset(
        tmp_path / "Dataset003_Big", n_cases=2, shape=(130, 120, 110)
    )

    def speck_share(fraction: float) -> float:
        cfg = _cfg(
            tmp_path,
            [nnunet_dataset],
            f"task.foreground_fraction={fraction}",
            "task.samples_per_epoch=40",
            "data.flip_prob=0",
        )
        dataset = build_semantic_dataset(cfg, show_progress=False)
        return float(np.mean([(dataset[(0, i)]["label"] == 2).any() for i in range(40)]))

    balanced, uniform = speck_share(1.0), speck_share(0.0)
    assert 0.3 <= balanced <= 0.75
    assert uniform < balanced


def test_a_subset_of_classes_and_the_rest_is_background(tmp_path, nnunet_dataset):
    cfg = _cfg(tmp_path, [nnunet_dataset], "task.classes=[speck]")
    dataset = build_semantic_dataset(cfg, show_progress=False)
    assert dataset.num_classes == 1 and dataset.cases[0].lut[:3] == (0, 0, 1)
    labels = torch.cat([dataset[(0, i)]["label"] for i in range(4)])
    assert set(labels.unique().tolist()) <= {IGNORE_LABEL, 0, 1}


def test_undeclared_label_value_is_one_line(tmp_path, nnunet_dataset):
    path = nnunet_dataset / "labelsTr" / "case_002.nii.gz"
    vol = read_volume(path)
    arr = np.asarray(vol.array).copy()
    arr[10:14, 10:14, 10:14] = 7
    write_volume(vol.with_array(arr), path)
    with pytest.raises(ValueError, match="label value 7 is not declared") as info:
        build_semantic_cases(_cfg(tmp_path, [nnunet_dataset]), show_progress=False)
    assert "case_002" in str(info.value) and "\n" not in str(info.value)


def test_class_in_no_training_case_is_one_line(tmp_path, nnunet_dataset):
    _set_dataset_labels(nnunet_dataset, {"blob": 1, "speck": 2, "lesion": 3})
    with pytest.raises(ValueError, match="class 'lesion' occurs in no training case"):
        build_semantic_cases(_cfg(tmp_path, [nnunet_dataset]), show_progress=False)


def test_class_missing_in_some_cases_is_documented_behaviour(tmp_path, nnunet_dataset, caplog):
    for name in ("case_000", "case_001"):
        path = nnunet_dataset / "labelsTr" / f"{name}.nii.gz"
        vol = read_volume(path)
        write_volume(vol.with_array(np.where(vol.array == 2, 0, vol.array).astype(np.uint8)), path)
    with caplog.at_level(logging.INFO, logger="sammed3d"):
        dataset = build_semantic_dataset(_cfg(tmp_path, [nnunet_dataset]), show_progress=False)
    assert "class 'speck' is absent from 2 of 4 cases" in caplog.text
    assert dataset.cases_with[2] == [2, 3] and dataset.cases_with[1] == [0, 1, 2, 3]


def test_class_names_across_datasets(tmp_path):
    a = write_nnunet_dataset(tmp_path / "Dataset001_A", n_cases=1)
    b = write_nnunet_dataset(tmp_path / "Dataset002_B", n_cases=1, seed=1)
    _set_dataset_labels(b, {"speck": 1, "blob": 2, "other": 3})  # other values, one more class
    with pytest.raises(ValueError, match="declare different classes"):
        resolve_task_data(_cfg(tmp_path, [a, b]))
    data = resolve_task_data(_cfg(tmp_path, [a, b], "task.classes=[blob,speck]"))
    assert data.classes == ("blob", "speck") and len(data.cases) == 2
    cases, _ = build_semantic_cases(
        _cfg(tmp_path, [a, b], "task.classes=[blob,speck]"), show_progress=False
    )
    assert cases[0].lut[:3] == (0, 1, 2) and cases[1].lut[:4] == (0, 2, 1, 0)  # by name
    with pytest.raises(ValueError, match="does not declare class 'liver'"):
        resolve_task_data(_cfg(tmp_path, [a], "task.classes=[liver]"))


def _prepared(tmp_path: Path, source: Path) -> Path:
    """``sammed3d prepare``'s output for ``source`` (lenient cleaning: every mask kept)."""
    from sammed3d.data.cleaning_config import CleaningConfig
    from sammed3d.data.prepare import prepare_datasets

    lenient = CleaningConfig(min_volume_mm3=0, min_extent_mm=0, max_background_fraction=1.0)
    out = tmp_path / "prepared"
    prepare_datasets([source], out, cleaning=lenient, show_progress=False, histograms=False)
    return out


def test_prepare_output_trains_like_its_source(tmp_path, nnunet_dataset):
    """The per-class folders of prepare (one binary mask per class and scan) give the same
    cases, classes and labels as the nnU-Net dataset they were made from."""
    prepared = _prepared(tmp_path, nnunet_dataset)
    source, _ = build_semantic_cases(_cfg(tmp_path / "a", [nnunet_dataset]), show_progress=False)
    cases, data = build_semantic_cases(_cfg(tmp_path / "b", [prepared]), show_progress=False)
    assert data.classes == ("blob", "speck") and data.modality == "CT"
    assert [c.case_id for c in cases] == [c.case_id for c in source]  # once per scan
    for a, b in zip(source, cases, strict=True):
        labels_a = np.asarray(a.lut)[np.load(a.label)]
        labels_b = np.asarray(b.lut)[np.load(b.label)]
        np.testing.assert_array_equal(labels_b, labels_a)
        assert b.class_voxels == a.class_voxels and b.class_voxels[1] == 8


def test_a_mask_prepare_dropped_is_background_in_that_case(tmp_path, nnunet_dataset, caplog):
    prepared = _prepared(tmp_path, nnunet_dataset)
    for folder in ("imagesTr", "labelsTr"):  # as if cleaning had dropped this speck
        (prepared / "speck" / "ct_Blobs" / folder / "case_001.nii.gz").unlink()
    with caplog.at_level(logging.INFO, logger="sammed3d"):
        cases, data = build_semantic_cases(_cfg(tmp_path, [prepared]), show_progress=False)
    assert data.classes == ("blob", "speck") and len(cases) == 4
    assert [c.class_voxels[1] for c in cases] == [8, 0, 8, 8]
    assert "class 'speck' has no mask file in 1 of 4 cases (taken as background there; " in (
        caplog.text
    )
    assert "manifest.jsonl records no dropped mask for them)" in caplog.text
    assert "absent from" not in caplog.text
    # a scan with a single class folder is a mask case too (no "does not declare" error)
    for folder in ("imagesTr", "labelsTr"):
        (prepared / "blob" / "ct_Blobs" / folder / "case_002.nii.gz").unlink()
    data = resolve_task_data(_cfg(tmp_path, [prepared]))
    assert data.classes == ("blob", "speck") and len(data.cases) == 4


def test_masks_prepare_dropped_are_counted_by_rule(tmp_path, nnunet_dataset, caplog):
    """The warning says the mask file is missing (not the structure), how many of those masks
    prepare's manifest.jsonl records as dropped and why, and the options that keep them."""
    prepared = _prepared(tmp_path, nnunet_dataset)
    dropped = {"case_000": "min_extent", "case_001": "min_volume", "case_002": "min_extent"}
    for case in dropped:
        for folder in ("imagesTr", "labelsTr"):
            (prepared / "speck" / "ct_Blobs" / folder / f"{case}.nii.gz").unlink()
    manifest = prepared / "manifest.jsonl"
    lines = []
    for line in manifest.read_text().splitlines():
        rec = json.loads(line)
        if rec["class_name"] == "speck" and rec["case"] in dropped:
            rec.update(status="dropped", rule=dropped[rec["case"]])
        lines.append(json.dumps(rec))
    lines += ["not json", json.dumps({"status": "dropped"}), "[1, 2]"]  # read leniently
    manifest.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.INFO, logger="sammed3d"):
        cases, _ = build_semantic_cases(_cfg(tmp_path, [prepared]), show_progress=False)
    assert [c.class_voxels[1] for c in cases] == [0, 0, 0, 8]
    said = [r for r in caplog.records if "'speck'" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    assert said[0].getMessage() == (
        "warning: class 'speck' has no mask file in 3 of 4 cases: prepare dropped 3 of them "
        "(2 min_extent (--min-extent), 1 min_volume (--min-volume); see "
        f"{manifest}), so the structure, though it may be in those images, is trained as "
        "background there (to keep such masks, re-run sammed3d prepare with looser "
        "--min-extent/--min-volume)"
    )
    assert "'blob'" not in caplog.text  # every case has its blob


def test_a_mask_with_another_value_is_one_line(tmp_path, nnunet_dataset):
    prepared = _prepared(tmp_path, nnunet_dataset)
    path = prepared / "blob" / "ct_Blobs" / "labelsTr" / "case_002.nii.gz"
    vol = read_volume(path)
    write_volume(vol.with_array((np.asarray(vol.array) * 255).astype(np.uint8)), path)
    with pytest.raises(ValueError, match="label value 255 in the mask of class 'blob'") as info:
        build_semantic_cases(_cfg(tmp_path, [prepared]), show_progress=False)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_masks_of_a_scan_on_different_grids_skip_it_once(tmp_path, nnunet_dataset, caplog):
    prepared = _prepared(tmp_path, nnunet_dataset)
    path = prepared / "speck" / "ct_Blobs" / "labelsTr" / "case_002.nii.gz"
    vol = read_volume(path)
    write_volume(Volume(vol.array, (2.0, 1.5, 1.5), vol.origin, vol.direction), path)
    for _ in ("build", "reuse"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="sammed3d"):
            cases, _ = build_semantic_cases(_cfg(tmp_path, [prepared]), show_progress=False)
        assert [c.case_id for c in cases] == ["case_000", "case_001", "case_003"]
        said = [r.getMessage() for r in caplog.records if "case_002" in r.getMessage()]
        assert len(said) == 1 and "spacing" in said[0], said


def test_one_mask_file_per_class_layouts_train(tmp_path):
    """TotalSegmentator subjects: the mask files of a subject become one label map."""
    from tests.data import replicas

    root = replicas.totalsegmentator(tmp_path)
    data = resolve_task_data(_cfg(tmp_path, [root]))
    assert data.classes == ("kidney_left", "kidney_right", "liver", "rib_left_3", "vertebrae_L1")
    cfg = _cfg(tmp_path, [root], "task.classes=[liver,kidney_left]")
    cases, _ = build_semantic_cases(cfg, show_progress=False)
    assert [c.case_id for c in cases] == ["s0000", "s0001"]  # train + val subjects
    assert [c.class_voxels for c in cases] == [(125, 125)] * 2  # 5^3 boxes
    with pytest.raises(ValueError, match="class 'rib_left_3' occurs in no training case"):
        build_semantic_cases(_cfg(tmp_path, [root]), show_progress=False)


def test_config_rules():
    with pytest.raises(ConfigError, match="labelled datasets"):
        load_config("tiny_cpu", ["task.kind=semantic", "data.synthetic_per_epoch=4"])
    with pytest.raises(ConfigError, match="per_sample"):
        load_config("tiny_cpu", ["task.kind=semantic", "data.normalization=per_batch"])
    with pytest.raises(ConfigError, match="task.layer_decay"):
        load_config("tiny_cpu", ["task.layer_decay=0"])
    with pytest.raises(ConfigError, match="task.classes"):
        load_config("tiny_cpu", ["task.classes=[a,a]"])
    with pytest.raises(ConfigError, match="task.kind must be one of"):
        load_config("tiny_cpu", ["task.kind=dense"])
    assert load_config("semantic").task.kind == "semantic"


def test_small_image_volume_case(tmp_path):
    """A case much smaller than the crop trains (padding) and its voxels are all kept."""
    root = tmp_path / "Dataset009_Small"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    image = np.full((12, 10, 8), 50.0, np.float32)
    image[4:8, 3:7, 2:6] = 200.0
    label = (image > 100).astype(np.uint8)
    write_volume(Volume(image, (1.5, 1.5, 1.5)), root / "imagesTr" / "s_0000.nii.gz")
    write_volume(Volume(label, (1.5, 1.5, 1.5)), root / "labelsTr" / "s.nii.gz")
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "MR"},
                "labels": {"background": 0, "box": 1},
                "file_ending": ".nii.gz",
            }
        )
    )
    dataset = build_semantic_dataset(
        _cfg(tmp_path, [root], "data.flip_prob=0"), show_progress=False
    )
    sample = dataset[(0, 0)]
    assert int((sample["label"] == 1).sum()) == int(label.sum())  # the whole case is inside
