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
    build_semantic_cases,
    build_semantic_dataset,
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
    assert set(sample["label"].unique().tolist()) <= {0, 1, 2}
    again = dataset[(0, 3)]
    assert torch.equal(sample["image"], again["image"]) and torch.equal(
        sample["label"], again["label"]
    )
    assert not torch.equal(dataset[(1, 3)]["image"], sample["image"])  # other epoch, other crop
    # the cases (48x44x40 voxels) are smaller than the 64^3 crop: zero-padded, label background
    which, _ = dataset.choose(sample_rng(cfg.train.seed, 0, 3))
    zero = (0.0 - dataset.cases[which].mean) / dataset.cases[which].std  # raw 0, z-scored
    padded = torch.isclose(sample["image"], torch.tensor(zero, dtype=torch.float32)).float().mean()
    assert padded > 0.5


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
    assert set(labels.unique().tolist()) <= {0, 1}


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


def test_per_class_mask_layouts_are_refused(tmp_path):
    from tests.data import replicas

    root = replicas.totalsegmentator(tmp_path)
    with pytest.raises(ValueError, match="one label map per case"):
        resolve_task_data(_cfg(tmp_path, [root]))


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
