"""BIDS with derivatives (VerSe style): labels matched to images by entity."""

from __future__ import annotations

from pathlib import Path

import pytest

from sammed3d.data.layout import (
    detect_layout,
    discover_dataset,
    discover_dataset_lenient,
    iter_targets,
)
from sammed3d.data.layouts import bids
from tests.data import replicas


def test_verse_targets_one_by_one(tmp_path: Path) -> None:
    ds = replicas.verse(tmp_path)
    assert detect_layout(ds) == "bids"
    cases = discover_dataset(ds)
    assert [(c.case_id, c.dataset, c.image.name) for c in cases] == [
        ("sub-gl003_dir-ax", "dataset-verse20training", "sub-gl003_dir-ax_ct.nii.gz"),
        ("sub-verse004", "dataset-verse20training", "sub-verse004_ct.nii.gz"),
    ]
    rows = replicas.target_rows(iter_targets(cases))
    mask = "sub-gl003_dir-ax_seg-vert_msk.nii.gz"
    # The centroid file lists L1 and L2: only those are targets of sub-gl003.
    assert rows[:2] == [
        ("sub-gl003_dir-ax", None, "CT", "L1", "vertebrae_l1", 20, mask),
        ("sub-gl003_dir-ax", None, "CT", "L2", "vertebrae_l2", 21, mask),
    ]
    # No centroid file: the whole VerSe numbering is declared.
    rest = rows[2:]
    assert len(rest) == 28
    expected = {
        1: ("C1", "vertebrae_c1"),
        7: ("C7", "vertebrae_c7"),
        8: ("T1", "vertebrae_t1"),
        19: ("T12", "vertebrae_t12"),
        20: ("L1", "vertebrae_l1"),
        25: ("L6", "vertebrae_l6"),
        26: ("sacrum", "sacrum"),
        27: ("coccyx", "coccyx"),
        28: ("T13", "vertebrae_t13"),
    }
    by_value = {r[5]: r for r in rest}
    for value, (name, category) in expected.items():
        assert by_value[value] == (
            "sub-verse004",
            None,
            "CT",
            name,
            category,
            value,
            "sub-verse004_seg-vert_msk.nii.gz",
        )
    assert all(r[4] is not None for r in rest)  # every VerSe name is in the catalogue


def test_mr_sequences_dseg_tsv_and_unlabelled_images(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ds = replicas.bids_mr(tmp_path)
    assert detect_layout(ds) == "bids"
    with caplog.at_level("INFO"):
        cases = discover_dataset(ds)
    assert "1 image(s) without a label" in caplog.text  # sub-02 has no derivative
    dseg = "sub-01_ses-1_desc-tumor_dseg.nii.gz"
    assert replicas.target_rows(iter_targets(cases)) == [
        ("sub-01_ses-1", seq, "MR", name, category, value, dseg)
        for seq in ("T1w", "T2w")
        for name, category, value in (
            ("tumor core", "tumor_core", 1),
            ("edema", None, 2),  # a bare "edema" is not guessed to be peritumoral
        )
    ]
    assert cases[0].image == ds / "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz"
    # A sidecar next to the label wins over the dataset-level table.
    label = cases[0].label
    label.with_name(dseg.replace(".nii.gz", ".tsv")).write_text("index\tname\n1\tLiver\n")
    assert discover_dataset(ds)[0].labels == {"Liver": 1}


def test_problems_are_named(tmp_path: Path) -> None:
    ds = replicas.bids_mr(tmp_path)
    (ds / "derivatives/manual/dseg.tsv").unlink()
    replicas.write(
        ds / "derivatives/manual/sub-03/anat/sub-03_desc-tumor_dseg.nii.gz",
        replicas.mask(replicas.BOX_A),
    )
    cases, problems = discover_dataset_lenient(ds)
    assert cases == []
    messages = sorted(p.message for p in problems)
    assert messages[0].startswith("no image for ") and "sub-03_desc-tumor_dseg" in messages[0]
    assert messages[1].startswith("no label names for ") and "dseg.tsv" in messages[1]


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("sub-01_ses-2_T1w.nii.gz", ({"sub": "01", "ses": "2"}, "T1w")),
        (
            "sub-gl003_dir-ax_seg-vert_msk.nii.gz",
            ({"sub": "gl003", "dir": "ax", "seg": "vert"}, "msk"),
        ),
        ("sub-01.nii.gz", None),
        ("scan_T1w.nii.gz", None),
        ("sub-01_bad_T1w.nii.gz", None),
    ],
)
def test_parse_name(name: str, parsed: object) -> None:
    assert bids.parse_name(name) == parsed


def test_dseg_tsv_errors(tmp_path: Path) -> None:
    tsv = tmp_path / "dseg.tsv"
    tsv.write_text("value\tlabel\n1\tliver\n")
    with pytest.raises(ValueError, match="columns index and name"):
        bids.read_dseg_tsv(tsv)
    tsv.write_text("index\tname\none\tliver\n")
    with pytest.raises(ValueError, match="line 2: index 'one'"):
        bids.read_dseg_tsv(tsv)
