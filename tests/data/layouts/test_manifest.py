"""The CSV manifest: three spellings of the label names, row-level problems, file-level errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from sammed3d.data.layout import (
    detect_layout,
    discover_dataset,
    discover_dataset_lenient,
    iter_targets,
)
from sammed3d.data.layouts import manifest
from tests.data import replicas


def test_rows_to_targets(tmp_path: Path) -> None:
    study = replicas.manifest(tmp_path)
    csv_file = study / "manifest.csv"
    assert detect_layout(study) == detect_layout(csv_file) == "manifest"
    train = discover_dataset(csv_file, "train")
    assert [(c.case_id, c.dataset, c.split, c.image) for c in train] == [
        ("p1", "study", "train", study / "img" / "p1.nii.gz"),
        ("p2", "study", "train", study / "img" / "p2.nii.gz"),
    ]
    assert replicas.target_rows(iter_targets(train)) == [
        ("p1", None, "CT", "Liver", "liver", 1, "p1.nii.gz"),
        ("p1", None, "CT", "liver tumour", "liver_tumor", 2, "p1.nii.gz"),
        ("p2", None, "MR", "Spleen", "spleen", 1, "p2.nii.gz"),
    ]
    test = discover_dataset(study, "test")  # the folder holding manifest.csv
    assert replicas.target_rows(iter_targets(test)) == [
        ("p3", None, "CT", "Left Kidney", "kidney_left", 3, "p3.nii.gz"),
    ]
    assert [c.case_id for c in discover_dataset(study)] == ["p3"]  # auto: the test rows


def test_optional_columns_and_absolute_paths(tmp_path: Path) -> None:
    study = replicas.manifest(tmp_path)
    other = tmp_path / "elsewhere.csv"
    other.write_text(
        "case,dataset,image,label,modality,labels,sequence\n"
        f"A,Mine,{study / 'img/p2.nii.gz'},{study / 'seg/p2.nii.gz'},FLAIR,1=spleen,flair\n"
        f"../p 1,My Study/2,{study / 'img/p1.nii.gz'},{study / 'seg/p1.nii.gz'},CT,1=liver,\n"
    )
    case, odd = discover_dataset(other)
    assert (odd.case_id, odd.dataset) == (".._p_1", "My_Study_2")  # safe as file names
    assert (case.case_id, case.dataset, case.modality, case.sequence) == (
        "A",
        "Mine_flair",
        "MR",
        "flair",
    )


def test_bad_rows_are_problems_and_the_rest_continues(tmp_path: Path) -> None:
    study = replicas.manifest(tmp_path)
    (study / "manifest.csv").write_text(
        "image,label,modality,labels\n"
        "img/p1.nii.gz,seg/p1.nii.gz,CT,1=liver\n"  # line 2: fine
        "img/p9.nii.gz,seg/p1.nii.gz,CT,1=liver\n"  # line 3: image missing
        "img/p1.nii.gz,seg/p1.nii.gz,CT,1=liver\n"  # line 4: duplicate of line 2
        "img/p2.nii.gz,seg/p2.nii.gz,XRAYISH,1=spleen\n"  # line 5: modality
        "img/p3.nii.gz,seg/p3.nii.gz,CT,1:liver\n"  # line 6: labels syntax
        "img/p3.nii.gz,seg/p2.nii.gz,CT,1=a;1=b\n"  # line 7: value named twice
        ",,,\n"  # empty row: skipped
        "img/p2.nii.gz,seg/p9.nii.gz,MR,1=spleen\n"  # line 9: label missing
    )
    cases, problems = discover_dataset_lenient(study)
    assert [c.case_id for c in cases] == ["p1"]
    where = f"{study / 'manifest.csv'} line"
    assert [p.message for p in problems] == [
        f"{where} 3: image not found: {study / 'img/p9.nii.gz'}",
        f"{where} 4: duplicate of line 2 (same image and label)",
        f"{where} 5: modality 'XRAYISH' is not known (CT, MR, T1, T2, FLAIR, US, PET, ... or "
        "unknown)",
        f"{where} 6: cannot read '1:liver' in labels: expected value=name pairs such as "
        "1=liver;2=liver tumor",
        f"{where} 7: label value 1 is named twice in labels",
        f"{where} 9: label not found: {study / 'seg/p9.nii.gz'}",
    ]
    assert problems[0].path == study / "img/p9.nii.gz"
    assert [p.rule for p in problems] == [
        "missing_file",
        "duplicate_row",
        "bad_row",
        "bad_row",
        "bad_row",
        "missing_file",
    ]
    with pytest.raises(FileNotFoundError, match="line 3: image not found"):
        discover_dataset(study)


def test_same_case_id_twice(tmp_path: Path) -> None:
    study = replicas.manifest(tmp_path)
    (study / "manifest.csv").write_text(
        "case,image,label,modality,labels\n"
        "x,img/p1.nii.gz,seg/p1.nii.gz,CT,1=liver\n"
        "x,img/p3.nii.gz,seg/p3.nii.gz,CT,3=kidney\n"
    )
    _, [problem] = discover_dataset_lenient(study)
    assert "line 3: duplicate of line 2 (same dataset 'study' and case 'x'" in problem.message


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("image,label,labels\na,b,1=x\n", "needs the columns image, label, modality, labels; "
         "missing modality"),
        ("", "missing image, label, modality, labels"),
    ],
)  # fmt: skip
def test_file_level_errors(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "m.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        discover_dataset(path)
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match="not a UTF-8 text file"):
        discover_dataset(path)


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("1=liver;2=liver tumor", {"liver": 1, "liver tumor": 2}),
        (" 2 = b ; 1 = a ;", {"a": 1, "b": 2}),
        ('{"1": "liver", "0": "background"}', {"liver": 1}),
        ('{"liver": 1}', {"liver": 1}),
    ],
)
def test_label_cells(tmp_path: Path, cell: str, expected: dict[str, int]) -> None:
    assert manifest.parse_label_names(cell, tmp_path) == expected


@pytest.mark.parametrize(
    ("cell", "match"),
    [
        ("", "labels is empty"),
        ("{oops", "not valid JSON"),
        ("names.json", "label names file not found"),
        ("0=background", "no foreground"),
        ('{"a": 1, "b": 1}', "share the value 1"),
    ],
)
def test_bad_label_cells(tmp_path: Path, cell: str, match: str) -> None:
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        manifest.parse_label_names(cell, tmp_path)
