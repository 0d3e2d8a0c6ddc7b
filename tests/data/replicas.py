"""Tiny replicas of public datasets' folder and file-name conventions (16³ volumes, 1.5 mm).

Each builder writes real NIfTI files under ``root`` with the names the dataset uses and returns
the folder a user would point ``sammed3d prepare``/``evaluate`` at. Label values follow the
datasets' documentation; image content is arbitrary but has a body brighter than the air.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sammed3d.io import Volume, write_volume

N = 16
SPACING = (1.5, 1.5, 1.5)
#: Blobs used by the label maps (voxel index boxes).
BOX_A = (slice(2, 7), slice(2, 7), slice(2, 7))
BOX_B = (slice(9, 14), slice(2, 7), slice(2, 7))
BOX_C = (slice(2, 7), slice(9, 14), slice(9, 14))
BOX_D = (slice(9, 14), slice(9, 14), slice(9, 14))


def write(path: Path, array: np.ndarray, spacing: tuple[float, ...] = SPACING) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_volume(Volume(array, spacing), path)
    return path


def image(seed: int = 0, ct: bool = True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if ct:
        arr = np.full((N, N, N), -1000.0, np.float32)
        arr[1:15, 1:15, :] = 40.0 + rng.normal(0, 5, (14, 14, N))
        return arr.astype(np.int16)
    arr = np.zeros((N, N, N), np.float32)
    arr[1:15, 1:15, 1:15] = 200.0 + rng.normal(0, 10, (14, 14, 14))
    return arr


def label_map(values: dict[int, tuple[slice, slice, slice]]) -> np.ndarray:
    arr = np.zeros((N, N, N), np.uint8)
    for value, box in values.items():
        arr[box] = value
    return arr


def mask(box: tuple[slice, slice, slice] | None) -> np.ndarray:
    return label_map({1: box} if box else {})


# ---------------------------------------------------------------------------------------------


def totalsegmentator(root: Path, meta: bool = True) -> Path:
    """``Totalsegmentator_dataset_v201``: s0000 (train), s0001 (val), s0002 (test).

    Masks per subject: liver, kidney_left, kidney_right, vertebrae_L1, rib_left_3 (empty).
    """
    ds = root / "Totalsegmentator_dataset_v201"
    masks = {
        "liver": BOX_A,
        "kidney_left": BOX_B,
        "kidney_right": BOX_C,
        "vertebrae_L1": BOX_D,
        "rib_left_3": None,
    }
    for n, subject in enumerate(("s0000", "s0001", "s0002")):
        write(ds / subject / "ct.nii.gz", image(n))
        for name, box in masks.items():
            write(ds / subject / "segmentations" / f"{name}.nii.gz", mask(box))
    if meta:
        header = (
            "image_id;age;gender;institute;study_type;split;manufacturer;scanner_model;kvp;"
            "pathology;pathology_location"
        )
        rows = [
            "s0000;64;m;A;ct abdomen;train;siemens;x;120;no_pathology;",
            "s0001;71;f;B;ct thorax;val;ge;y;100;tumor;lung",
            "s0002;55;m;C;ct polytrauma;test;philips;z;120;fracture;rib",
        ]
        (ds / "meta.csv").write_text("\ufeff" + "\n".join([header, *rows]) + "\n", "utf-8")
    return ds


def kits(root: Path, *, kits21: bool = False) -> Path:
    """``kits23/dataset`` (or ``kits21/data``): case_00000 and case_00001 labelled (1 kidney,
    2 tumor, 3 cyst), case_00002 imaging only (a test case)."""
    ds = root / ("kits21/data" if kits21 else "kits23/dataset")
    seg_name = "aggregated_MAJ_seg.nii.gz" if kits21 else "segmentation.nii.gz"
    for n in range(3):
        case = ds / f"case_{n:05d}"
        write(case / "imaging.nii.gz", image(n))
        if n < 2:
            write(case / seg_name, label_map({1: BOX_A, 2: BOX_B, 3: BOX_C}))
            if kits21:  # per-annotator instance files, as KiTS21 ships them
                write(
                    case / "segmentations" / "kidney_instance-1_annotation-1.nii.gz",
                    mask(BOX_A),
                )
    (ds / ("kits.json" if kits21 else "kits23.json")).write_text("[]")
    return ds


def lits(root: Path) -> Path:
    """LiTS as distributed: ``Training Batch 1/volume-0.nii`` + ``segmentation-0.nii`` and
    ``Training Batch 2/volume-28.nii`` + ``segmentation-28.nii`` (1 liver, 2 tumor)."""
    ds = root / "LiTS"
    for batch, n in (("Training Batch 1", 0), ("Training Batch 2", 28)):
        write(ds / batch / f"volume-{n}.nii", image(n))
        write(ds / batch / f"segmentation-{n}.nii", label_map({1: BOX_A, 2: BOX_B}))
    return ds


def brats2021(root: Path) -> Path:
    """``BraTS2021_Training_Data``: BraTS2021_00000 (4 sequences + seg: 1 NCR, 2 ED, 4 ET) and
    BraTS2021_00002 (sequences only)."""
    ds = root / "BraTS2021_Training_Data"
    for case, labelled in (("BraTS2021_00000", True), ("BraTS2021_00002", False)):
        for n, seq in enumerate(("flair", "t1", "t1ce", "t2")):
            write(ds / case / f"{case}_{seq}.nii.gz", image(n, ct=False))
        if labelled:
            write(ds / case / f"{case}_seg.nii.gz", label_map({1: BOX_A, 2: BOX_B, 4: BOX_C}))
    return ds


def brats2023(root: Path) -> Path:
    """``ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData/BraTS-GLI-00000-000`` with
    ``-t1c/-t1n/-t2f/-t2w`` and ``-seg`` (1 NETC, 2 SNFH, 3 ET)."""
    ds = root / "ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData"
    case = "BraTS-GLI-00000-000"
    for n, seq in enumerate(("t1c", "t1n", "t2f", "t2w")):
        write(ds / case / f"{case}-{seq}.nii.gz", image(n, ct=False))
    write(ds / case / f"{case}-seg.nii.gz", label_map({1: BOX_A, 2: BOX_B, 3: BOX_C}))
    return ds


def verse(root: Path) -> Path:
    """``dataset-verse20training``: sub-gl003 (dir-ax; centroids list L1, L2) and sub-verse004
    (no centroid file), as restructured VerSe (rawdata/ + derivatives/)."""
    ds = root / "dataset-verse20training"
    write(ds / "rawdata/sub-gl003/sub-gl003_dir-ax_ct.nii.gz", image(0))
    deriv = ds / "derivatives/sub-gl003"
    write(deriv / "sub-gl003_dir-ax_seg-vert_msk.nii.gz", label_map({20: BOX_A, 21: BOX_B}))
    ctd = [{"direction": ["P", "I", "R"]}, {"label": 20, "X": 4, "Y": 4, "Z": 4}]
    ctd.append({"label": 21, "X": 11, "Y": 4, "Z": 4})
    (deriv / "sub-gl003_dir-ax_seg-subreg_ctd.json").write_text(json.dumps(ctd))
    (deriv / "sub-gl003_dir-ax_seg-vert_snp.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    write(ds / "rawdata/sub-verse004/sub-verse004_ct.nii.gz", image(1))
    write(
        ds / "derivatives/sub-verse004/sub-verse004_seg-vert_msk.nii.gz",
        label_map({8: BOX_A, 28: BOX_B}),
    )
    return ds


def bids_mr(root: Path) -> Path:
    """A BIDS MR study: sub-01/ses-1/anat/ T1w and T2w, a manual ``dseg`` under
    ``derivatives/manual/`` with a dataset-level ``dseg.tsv`` (1 tumor core, 2 edema)."""
    ds = root / "glioma_bids"
    ds.mkdir(parents=True, exist_ok=True)
    (ds / "dataset_description.json").write_text('{"Name": "glioma", "BIDSVersion": "1.8.0"}')
    anat = ds / "sub-01/ses-1/anat"
    write(anat / "sub-01_ses-1_T1w.nii.gz", image(0, ct=False))
    write(anat / "sub-01_ses-1_T2w.nii.gz", image(1, ct=False))
    write(ds / "sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz", image(2, ct=False))  # unlabelled
    manual = ds / "derivatives/manual"
    write(
        manual / "sub-01/ses-1/anat/sub-01_ses-1_desc-tumor_dseg.nii.gz",
        label_map({1: BOX_A, 2: BOX_B}),
    )
    (manual / "dseg.tsv").write_text("index\tname\n0\tbackground\n1\ttumor core\n2\tedema\n")
    return ds


def manifest(root: Path) -> Path:
    """``root/study/manifest.csv`` with three rows, one per ``labels`` spelling."""
    study = root / "study"
    write(study / "img" / "p1.nii.gz", image(0))
    write(study / "seg" / "p1.nii.gz", label_map({1: BOX_A, 2: BOX_B}))
    write(study / "img" / "p2.nii.gz", image(1, ct=False))
    write(study / "seg" / "p2.nii.gz", label_map({1: BOX_C}))
    write(study / "img" / "p3.nii.gz", image(2))
    write(study / "seg" / "p3.nii.gz", label_map({3: BOX_D}))
    (study / "names").mkdir()
    (study / "names" / "p3.json").write_text(json.dumps({"labels": {"Left Kidney": 3}}))
    (study / "manifest.csv").write_text(
        "image,label,modality,labels,split\n"
        "img/p1.nii.gz,seg/p1.nii.gz,CT,1=Liver;2=liver tumour,train\n"
        'img/p2.nii.gz,seg/p2.nii.gz,T2,"{""1"": ""Spleen""}",train\n'
        "img/p3.nii.gz,seg/p3.nii.gz,ct,names/p3.json,test\n",
        encoding="utf-8",
    )
    return study


def target_rows(targets) -> list[tuple]:  # noqa: ANN001 - Target objects
    """``(case, sequence, modality, class_name, category, label_value, label file)`` per target,
    the fields the layout tests compare one by one."""
    return [
        (
            t.case_id,
            t.sequence,
            t.modality,
            t.class_name,
            t.category,
            t.label_value,
            t.label.name,
        )
        for t in targets
    ]
