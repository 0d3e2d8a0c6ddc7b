"""TotalSegmentator layout: subject folders, one mask file per structure, splits from meta.csv."""

from __future__ import annotations

from pathlib import Path

import pytest

from sammed3d.data.layout import (
    detect_layout,
    discover_dataset,
    discover_dataset_lenient,
    iter_targets,
)
from sammed3d.data.layouts import totalsegmentator
from tests.data import replicas

MASKS = [  # (class as the file is named, category, value, file), in name order
    ("kidney_left", "kidney_left", 1, "kidney_left.nii.gz"),
    ("kidney_right", "kidney_right", 1, "kidney_right.nii.gz"),
    ("liver", "liver", 1, "liver.nii.gz"),
    ("rib_left_3", "rib_left_3", 1, "rib_left_3.nii.gz"),
    ("vertebrae_L1", "vertebrae_l1", 1, "vertebrae_L1.nii.gz"),
]


def test_targets_of_each_subject_one_by_one(tmp_path: Path) -> None:
    ds = replicas.totalsegmentator(tmp_path)
    assert detect_layout(ds) == "totalsegmentator"
    cases = discover_dataset(ds, split="train")  # train + val subjects
    assert [(c.case_id, c.split, c.dataset) for c in cases] == [
        ("s0000", "train", "Totalsegmentator_dataset_v201"),
        ("s0001", "train", "Totalsegmentator_dataset_v201"),
    ]
    assert cases[0].image == ds / "s0000" / "ct.nii.gz"
    assert cases[0].label == ds / "s0000" / "segmentations"
    assert replicas.target_rows(iter_targets(cases)) == [
        (case, None, "CT", name, category, value, file)
        for case in ("s0000", "s0001")
        for name, category, value, file in MASKS
    ]
    targets = iter_targets(cases)
    assert targets[2].label == ds / "s0000" / "segmentations" / "liver.nii.gz"
    assert all(t.image == ds / t.case_id / "ct.nii.gz" for t in targets)


def test_splits_from_meta_csv(tmp_path: Path) -> None:
    ds = replicas.totalsegmentator(tmp_path)
    assert [(c.case_id, c.split) for c in discover_dataset(ds, "test")] == [("s0002", "test")]
    assert [c.case_id for c in discover_dataset(ds)] == ["s0002"]  # auto: the test split
    (ds / "meta.csv").unlink()
    assert [c.case_id for c in discover_dataset(ds)] == ["s0000", "s0001", "s0002"]
    assert {c.split for c in discover_dataset(ds, "test")} == {"test"}


def test_one_subject_folder_and_problems(tmp_path: Path) -> None:
    ds = replicas.totalsegmentator(tmp_path, meta=False)
    one = discover_dataset(ds / "s0001")
    assert [(c.case_id, len(c.masks)) for c in one] == [("s0001", 5)]
    (ds / "s0001" / "ct.nii.gz").unlink()
    for p in (ds / "s0002" / "segmentations").iterdir():
        p.unlink()
    cases, problems = discover_dataset_lenient(ds)
    assert [c.case_id for c in cases] == ["s0000"]
    assert [(p.case_id, p.message.split(":")[0]) for p in problems] == [
        ("s0001", f"no image for {ds / 's0001' / 'segmentations'}"),
        ("s0002", f"no label for {ds / 's0002' / 'ct.nii.gz'}"),
    ]
    with pytest.raises(FileNotFoundError, match="no image for"):
        discover_dataset(ds)


def test_bad_meta_csv(tmp_path: Path) -> None:
    ds = replicas.totalsegmentator(tmp_path)
    text = (ds / "meta.csv").read_text(encoding="utf-8-sig")
    (ds / "meta.csv").write_text(text.replace(";val;", ";validation;"), encoding="utf-8")
    with pytest.raises(ValueError, match="line 3: split 'validation' is not train, val or test"):
        discover_dataset(ds)
    (ds / "meta.csv").write_text("id,fold\ns0000,1\n")
    with pytest.raises(ValueError, match="image_id and split"):
        discover_dataset(ds)


def test_kits21_case_folders_are_not_totalsegmentator(tmp_path: Path) -> None:
    """KiTS21 case folders hold a ``segmentations/`` folder too, but no ct.nii.gz."""
    ds = replicas.kits(tmp_path, kits21=True)
    assert (ds / "case_00000" / "segmentations").is_dir()
    assert not totalsegmentator.detect(ds)
    assert detect_layout(ds) == "case-folders"
