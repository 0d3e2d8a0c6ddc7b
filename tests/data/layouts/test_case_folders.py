"""Case folders: KiTS, LiTS and BraTS file-name patterns; MR sequences become separate cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from sammed3d.data.layout import (
    detect_layout,
    discover_dataset,
    discover_dataset_lenient,
    iter_targets,
)
from tests.data import replicas

KITS = [
    ("kidney", "kidney", 1),
    ("kidney tumor", "kidney_tumor", 2),
    ("kidney cyst", "kidney_cyst", 3),
]


@pytest.mark.parametrize("kits21", [False, True])
def test_kits(tmp_path: Path, kits21: bool, caplog: pytest.LogCaptureFixture) -> None:
    ds = replicas.kits(tmp_path, kits21=kits21)
    assert detect_layout(ds) == "case-folders"
    with caplog.at_level("INFO"):
        cases = discover_dataset(ds, "train")
    assert "1 image(s) without a label file skipped as unlabelled" in caplog.text  # case_00002
    assert [(c.dataset, c.case_id, c.split) for c in cases] == [
        ("KiTS", "case_00000", "train"),
        ("KiTS", "case_00001", "train"),
    ]
    seg = "aggregated_MAJ_seg.nii.gz" if kits21 else "segmentation.nii.gz"
    assert replicas.target_rows(iter_targets(cases)) == [
        (case, None, "CT", name, category, value, seg)
        for case in ("case_00000", "case_00001")
        for name, category, value in KITS
    ]
    assert cases[0].image == ds / "case_00000" / "imaging.nii.gz"


def test_lits_two_batches(tmp_path: Path) -> None:
    ds = replicas.lits(tmp_path)
    targets = iter_targets(discover_dataset(ds))
    assert replicas.target_rows(targets) == [
        ("volume-0", None, "CT", "liver", "liver", 1, "segmentation-0.nii"),
        ("volume-0", None, "CT", "liver tumor", "liver_tumor", 2, "segmentation-0.nii"),
        ("volume-28", None, "CT", "liver", "liver", 1, "segmentation-28.nii"),
        ("volume-28", None, "CT", "liver tumor", "liver_tumor", 2, "segmentation-28.nii"),
    ]
    assert targets[0].image == ds / "Training Batch 1" / "volume-0.nii"
    assert targets[2].image == ds / "Training Batch 2" / "volume-28.nii"
    assert {t.dataset for t in targets} == {"LiTS"}


def test_brats2021_sequences_are_separate_modality_entries(tmp_path: Path) -> None:
    ds = replicas.brats2021(tmp_path)
    cases = discover_dataset(ds)
    case = "BraTS2021_00000"
    assert [(c.case_id, c.sequence, c.modality, c.dataset) for c in cases] == [
        (case, seq, "MR", f"BraTS2021_{seq}") for seq in ("flair", "t1", "t1ce", "t2")
    ]
    assert [c.image.name for c in cases] == [
        f"{case}_{seq}.nii.gz" for seq in ("flair", "t1", "t1ce", "t2")
    ]
    assert {c.label for c in cases} == {ds / case / f"{case}_seg.nii.gz"}
    classes = [
        ("necrotic tumor core", "necrotic_tumor_core", 1),
        ("peritumoral edema", "peritumoral_edema", 2),
        ("enhancing tumor", "enhancing_tumor", 4),
    ]
    assert replicas.target_rows(iter_targets(cases)) == [
        (case, seq, "MR", name, category, value, f"{case}_seg.nii.gz")
        for seq in ("flair", "t1", "t1ce", "t2")
        for name, category, value in classes
    ]


def test_brats2023_naming(tmp_path: Path) -> None:
    ds = replicas.brats2023(tmp_path)
    case = "BraTS-GLI-00000-000"
    classes = [
        ("non-enhancing tumor core", "necrotic_tumor_core", 1),
        ("surrounding non-enhancing FLAIR hyperintensity", "peritumoral_edema", 2),
        ("enhancing tissue", "enhancing_tumor", 3),
    ]
    targets = iter_targets(discover_dataset(ds))
    assert replicas.target_rows(targets) == [
        (case, seq, "MR", name, category, value, f"{case}-seg.nii.gz")
        for seq in ("t1c", "t1n", "t2f", "t2w")
        for name, category, value in classes
    ]
    assert [t.dataset for t in targets[::3]] == [
        f"BraTS-GLI_{seq}" for seq in ("t1c", "t1n", "t2f", "t2w")
    ]
    # (dataset, case, class) names one target, as evaluation requires.
    keys = [(t.dataset, t.case_id, t.class_name) for t in targets]
    assert len(set(keys)) == len(keys) == 12


def test_label_without_images_is_a_problem(tmp_path: Path) -> None:
    ds = replicas.kits(tmp_path)
    (ds / "case_00001" / "imaging.nii.gz").unlink()
    cases, problems = discover_dataset_lenient(ds)
    assert [c.case_id for c in cases] == ["case_00000"]
    assert [(p.dataset, p.case_id, p.message) for p in problems] == [
        (
            "KiTS",
            "case_00001",
            f"no image for {ds / 'case_00001' / 'segmentation.nii.gz'}: expected "
            f"{ds / 'case_00001' / 'imaging.nii.gz'}",
        )
    ]
    # A second label file next to a used one is not an orphan.
    replicas.write(ds / "case_00000" / "aggregated_MAJ_seg.nii.gz", replicas.mask(None))
    assert len(discover_dataset_lenient(ds)[1]) == 1
    brats = replicas.brats2021(tmp_path / "b")
    for seq in ("flair", "t1", "t1ce", "t2"):
        (brats / "BraTS2021_00000" / f"BraTS2021_00000_{seq}.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"BraTS2021_00000_\{flair,t1,t1ce,t2\}"):
        discover_dataset(brats)


def test_only_unlabelled_cases_is_an_error(tmp_path: Path) -> None:
    ds = replicas.kits(tmp_path)
    for case in ("case_00000", "case_00001"):
        (ds / case / "segmentation.nii.gz").unlink()
    with pytest.raises(ValueError, match="no labelled cases in .*KiTS"):
        discover_dataset(ds)
