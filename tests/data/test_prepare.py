"""End-to-end ``prepare_datasets`` on small synthetic nnU-Net and MSD datasets written to disk."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sammed3d.data.cleaning import CleaningConfig, connected_components
from sammed3d.data.layout import discover_dataset
from sammed3d.data.prepare import prepare_datasets, read_manifest
from sammed3d.io import Volume, read_volume, write_volume
from tests.data import replicas

LPS = np.eye(3)
RAS = np.diag([-1.0, -1.0, 1.0])  # a file stored in RAS voxel order: +i is the patient's right
SHAPE = (48, 40, 40)
LOW_I = (slice(3, 13), slice(5, 15), slice(14, 26))  # kidney blob near i = 0
HIGH_I = (slice(35, 45), slice(5, 15), slice(14, 26))  # kidney blob near i = 47


def _ct_case(k_scale: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """CT-like image (body box) and a label map: Liver=1 (7 components), kidney=2, tiny=3."""
    rng = np.random.default_rng(0)
    nk = SHAPE[2] // k_scale
    image = np.full((SHAPE[0], SHAPE[1], nk), -1000.0, np.float32)
    image[2:46, 2:38, :] = 40.0 + rng.normal(0, 5, (44, 36, nk)).astype(np.float32)
    label = np.zeros((SHAPE[0], SHAPE[1], SHAPE[2]), np.uint8)
    label[17:31, 20:34, 10:24] = 1  # liver body, 14³ voxels
    for n in range(6):  # six fragments -> 7 components; the two smallest (n = 0, 1) go
        label[4 + 7 * n : 6 + 7 * n, 36:38, 30 : 32 + n] = 1
    label[LOW_I] = 2
    label[HIGH_I] = 2
    label[20:26, 2:7, 30:35] = 3  # 150 voxels x 3.375 mm³ = 0.51 cm³
    return image, label[:, :, ::k_scale]


def _write(path: Path, array: np.ndarray, spacing, direction=LPS) -> None:
    write_volume(Volume(array, spacing, (10.0, -20.0, 30.0), direction), path)


def make_sources(root: Path) -> tuple[Path, Path]:
    """An nnU-Net v2 CT dataset (4 cases, one broken) and an MSD MR dataset (1 case)."""
    ct = root / "Dataset001_Abdomen"
    (ct / "imagesTr").mkdir(parents=True)
    meta = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "Liver": 1, "kidney": 2, "tiny": 3},
        "numTraining": 4,
        "file_ending": ".nii.gz",
    }
    (ct / "dataset.json").write_text(json.dumps(meta))
    image, label = _ct_case()
    for case, direction in (("lps01", LPS), ("ras01", RAS)):
        _write(ct / "imagesTr" / f"{case}_0000.nii.gz", image, (1.5,) * 3, direction)
        _write(ct / "labelsTr" / f"{case}.nii.gz", label, (1.5,) * 3, direction)
    # Anisotropic case: resampled to 1.5 mm by prepare.
    image2, label2 = _ct_case(k_scale=2)
    _write(ct / "imagesTr" / "aniso01_0000.nii.gz", image2, (1.5, 1.5, 3.0))
    _write(ct / "labelsTr" / "aniso01.nii.gz", label2, (1.5, 1.5, 3.0))
    # Geometry mismatch: label has fewer slices than the image.
    _write(ct / "imagesTr" / "bad01_0000.nii.gz", image, (1.5,) * 3)
    _write(ct / "labelsTr" / "bad01.nii.gz", label[:, :, :36], (1.5,) * 3)

    mr = root / "Task02_Liver"
    (mr / "imagesTr").mkdir(parents=True)
    meta = {"modality": {"0": "MRI"}, "labels": {"0": "background", "1": "liver"}}
    (mr / "dataset.json").write_text(json.dumps(meta))
    mr_image = np.zeros(SHAPE, np.float32)
    mr_image[4:44, 4:36, 4:36] = 300.0
    mr_label = np.zeros(SHAPE, np.uint8)
    mr_label[10:30, 10:30, 10:30] = 1
    _write(mr / "imagesTr" / "liver_1.nii.gz", mr_image, (1.5,) * 3)
    _write(mr / "labelsTr" / "liver_1.nii.gz", mr_label, (1.5,) * 3)
    return ct, mr


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("prepare")
    ct, mr = make_sources(root / "raw")
    before = _digest(root / "raw")
    result = prepare_datasets([ct, mr], root / "out", show_progress=False)
    return root, ct, mr, before, result


def _records(result, **match):
    return [r for r in result.records if all(r.get(k) == v for k, v in match.items())]


def test_outputs_in_per_class_layout(prepared) -> None:
    root, _, _, _, result = prepared
    out = root / "out"
    assert (result.cases, result.cases_failed, result.cases_resumed) == (5, 1, 0)
    cases = discover_dataset(out)
    found = sorted((next(iter(c.labels)), c.modality, c.dataset, c.case_id) for c in cases)
    expected = sorted(
        [(cls, "CT", "Abdomen", case) for cls in ("liver", "kidney_left", "kidney_right")
         for case in ("aniso01", "lps01", "ras01")]
        + [("liver", "MR", "Liver", "liver_1")]
    )  # fmt: skip
    assert found == expected
    assert result.kept == len(expected)
    for c in cases:
        label = read_volume(c.label)
        image = read_volume(c.image)
        assert label.array.dtype == np.uint8 and set(np.unique(label.array)) == {0, 1}
        assert image.shape == label.shape
        assert np.allclose(label.spacing, 1.5)
        np.testing.assert_allclose(image.affine, label.affine, atol=1e-4)
    # Unresampled image content is carried over exactly, geometry included.
    src = read_volume(prepared[1] / "imagesTr" / "ras01_0000.nii.gz")
    dst = read_volume(out / "liver" / "ct_Abdomen" / "imagesTr" / "ras01.nii.gz")
    np.testing.assert_array_equal(src.array, dst.array)
    np.testing.assert_allclose(src.affine, dst.affine)
    aniso = read_volume(out / "liver" / "ct_Abdomen" / "labelsTr" / "aniso01.nii.gz")
    assert aniso.shape == (48, 40, 40)


def test_step1_drops_half_cc_mask(prepared) -> None:
    tiny = [r for r in _records(prepared[4], source_class="tiny") if r["case"] != "bad01"]
    assert len(tiny) == 3
    assert {r["rule"] for r in tiny} == {"min_volume"}
    lps = _records(prepared[4], source_class="tiny", case="lps01")[0]
    assert lps["voxels"] == 150 and lps["volume_mm3"] == pytest.approx(506.25)
    assert lps["status"] == "dropped" and "label_out" not in lps


def test_seven_components_keep_five(prepared) -> None:
    root, *_ = prepared
    [rec] = _records(prepared[4], class_name="liver", case="lps01")
    assert (rec["components"], rec["components_removed"], rec["voxels_removed"]) == (7, 2, 20)
    label = read_volume(root / "out" / rec["label_out"])
    assert connected_components(label.array > 0)[1].size == 5
    assert rec["bbox_voxels"] == [[17, 20, 10], [41, 38, 37]]  # fragments n = 0, 1 removed
    assert rec["bbox_mm"] == [pytest.approx(v) for v in (36.0, 27.0, 40.5)]


@pytest.mark.parametrize(("case", "high_i_side"), [("lps01", "left"), ("ras01", "right")])
def test_two_sided_structure_split_by_patient_side(prepared, case, high_i_side) -> None:
    root, *_ = prepared
    recs = _records(prepared[4], case=case, source_class="kidney")
    assert sorted((r["class_name"], r["side"], r["status"]) for r in recs) == [
        ("kidney_left", "left", "kept"),
        ("kidney_right", "right", "kept"),
    ]
    high = read_volume(root / "out" / f"kidney_{high_i_side}/ct_Abdomen/labelsTr/{case}.nii.gz")
    other = "left" if high_i_side == "right" else "right"
    low = read_volume(root / "out" / f"kidney_{other}/ct_Abdomen/labelsTr/{case}.nii.gz")
    assert high.array[HIGH_I].all() and high.array.sum() == high.array[HIGH_I].sum()
    assert low.array[LOW_I].all() and low.array.sum() == low.array[LOW_I].sum()


def test_geometry_mismatch_reported_not_crashed(prepared) -> None:
    bad = _records(prepared[4], case="bad01")
    assert len(bad) == 3
    assert {(r["status"], r["rule"]) for r in bad} == {("error", "integrity:shape")}
    assert "(48, 40, 40)" in bad[0]["message"] and "(48, 40, 36)" in bad[0]["message"]


def test_manifest_catalogue_report(prepared) -> None:
    root, _, _, _, result = prepared
    out = root / "out"
    manifest = read_manifest(out)
    assert manifest == json.loads(json.dumps(result.records))
    for r in manifest:
        for key in ("source", "dataset", "case", "class_name", "modality", "status", "rule"):
            assert key in r
    catalogue = json.loads((out / "catalogue.json").read_text(encoding="utf-8"))["categories"]
    liver = catalogue["liver"]
    assert liver["source_names"] == ["Liver", "liver"]
    assert liver["datasets"] == ["Abdomen", "Liver"]
    assert liver["modalities"] == ["CT", "MR"]
    assert liver["kept"] == 4
    assert catalogue["kidney_left"]["paired_of"] == "kidney"
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["by_rule"] == {"integrity:shape": 3, "min_volume": 3}
    assert report["by_class"]["tiny"]["rules"] == {"integrity:shape": 1, "min_volume": 3}
    assert report["totals"]["kept"] == 10
    assert [e["case"] for e in report["errors"]] == ["bad01"]
    for name in report["histograms"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_skips_finished_and_sources_untouched(prepared) -> None:
    root, ct, mr, before, result = prepared
    manifest = (root / "out" / "manifest.jsonl").read_text(encoding="utf-8")
    again = prepare_datasets([ct, mr], root / "out", show_progress=False)
    assert again.cases_resumed == 5  # the broken case is deterministic, so also finished
    assert (root / "out" / "manifest.jsonl").read_text(encoding="utf-8") == manifest
    assert _digest(root / "raw") == before


def test_changed_settings_redo_and_remove_stale_outputs(tmp_path: Path) -> None:
    ct, _ = make_sources(tmp_path / "raw")
    shutil.rmtree(ct.parent / "Task02_Liver")
    for case in ("aniso01", "bad01", "ras01"):
        (ct / "imagesTr" / f"{case}_0000.nii.gz").unlink()
        (ct / "labelsTr" / f"{case}.nii.gz").unlink()
    out = tmp_path / "out"
    first = prepare_datasets([ct], out, show_progress=False, histograms=False)
    assert first.kept == 3
    from sammed3d.data.cleaning import CleaningConfig

    second = prepare_datasets(
        [ct], out, cleaning=CleaningConfig(min_extent_mm=16.0), show_progress=False
    )
    assert second.cases_resumed == 0
    assert second.kept == 1  # the 15 mm kidneys now fail step 1
    assert not (out / "kidney_left").exists()
    assert [next(iter(c.labels)) for c in discover_dataset(out)] == ["liver"]


def test_unpaired_cases_are_skipped_with_a_warning_and_the_run_continues(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A missing image or label skips the case (named with the file, in the log and the
    report); an unreadable label fails it. Both are counted per case, apart."""
    ct, mr = make_sources(tmp_path / "raw")
    (mr / "imagesTr" / "liver_1.nii.gz").unlink()
    _write(mr / "imagesTr" / "liver_2.nii.gz", np.zeros(SHAPE, np.float32), (1.5,) * 3)
    (ct / "labelsTr" / "lps01.nii.gz").write_bytes(b"not a nifti")  # unreadable label
    for case in ("aniso01", "bad01", "ras01"):
        (ct / "labelsTr" / f"{case}.nii.gz").unlink()
        (ct / "imagesTr" / f"{case}_0000.nii.gz").unlink()
    out = tmp_path / "out"
    with caplog.at_level("INFO", logger="sammed3d.data.prepare"):
        result = prepare_datasets([ct, mr], out, show_progress=False, histograms=False)
    rules = sorted((r["case"], r["status"], r["rule"]) for r in result.records)
    assert rules == [
        ("liver_1", "skipped", "missing_file"),
        ("liver_2", "skipped", "missing_file"),
        ("lps01", "error", "error"),
        ("lps01", "error", "error"),
        ("lps01", "error", "error"),
    ]
    assert "cannot read" in _records(result, case="lps01")[0]["message"]
    counts = (result.cases, result.cases_failed, result.cases_skipped, result.kept)
    assert counts == (3, 1, 2, 0)
    missing_label = mr / "labelsTr" / "liver_2.nii.gz"
    [skip] = _records(result, case="liver_2")
    assert skip["file"] == str(mr / "imagesTr" / "liver_2.nii.gz")
    assert skip["message"].endswith(f"expected {missing_label}")
    said = [r.getMessage() for r in caplog.records]
    assert "3 case(s) found in 2 source(s): 1 to prepare, 2 skipped" in said
    assert f"warning: skipped case Liver/liver_2: {skip['message']}" in said
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["skipped"] == [
        {k: r[k] for k in ("dataset", "case", "rule", "file", "message")}
        for r in result.records
        if r["status"] == "skipped"
    ]
    assert [e["case"] for e in report["errors"]] == ["lps01"]
    totals = report["totals"]
    assert (totals["cases"], totals["cases_failed"], totals["cases_skipped"]) == (3, 1, 2)
    assert "missing_file" not in report["by_rule"] and "(unknown)" not in report["by_class"]
    assert not list(out.rglob("liver_2.nii.gz"))  # nothing of a skipped case is written


def test_many_skipped_cases_are_named_up_to_a_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sammed3d.data.prepare import SKIPPED_SHOWN

    ct, _ = make_sources(tmp_path / "raw")
    for n in range(SKIPPED_SHOWN + 2):  # images without labels
        _write(ct / "imagesTr" / f"nolabel{n}_0000.nii.gz", np.zeros((4, 4, 4)), (1.5,) * 3)
    with caplog.at_level("WARNING", logger="sammed3d.data.prepare"):
        result = prepare_datasets([ct], tmp_path / "out", show_progress=False, histograms=False)
    assert result.cases_skipped == SKIPPED_SHOWN + 2
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("warning: ")]
    assert len(said) == SKIPPED_SHOWN + 1
    assert said[-1] == "warning: and 2 more skipped case(s); all are listed under 'skipped' in " + (
        "report.json"
    )


def test_failed_cases_are_counted_once_each(tmp_path: Path) -> None:
    """The four BraTS sequences share one label file: an unreadable one fails four cases
    (counted as one before: the count was by source, case id and label file)."""
    ds = replicas.brats2021(tmp_path / "raw")
    [label] = list(ds.rglob("*_seg.nii.gz"))
    label.write_bytes(b"not a nifti")
    result = prepare_datasets(
        [ds], tmp_path / "out", cleaning=LENIENT, show_progress=False, histograms=False
    )
    assert (result.cases, result.cases_failed, result.cases_skipped, result.kept) == (4, 4, 0, 0)


def test_parallel_workers_give_the_same_manifest(tmp_path: Path, prepared) -> None:
    root, ct, mr, _, _ = prepared
    result = prepare_datasets([ct, mr], tmp_path / "out", workers=2, show_progress=False)
    assert (tmp_path / "out" / "manifest.jsonl").read_text(encoding="utf-8") == (
        root / "out" / "manifest.jsonl"
    ).read_text(encoding="utf-8")
    assert result.kept == 10


def test_bad_arguments(tmp_path: Path) -> None:
    ct, mr = make_sources(tmp_path / "raw")
    with pytest.raises(ValueError, match="overlaps the source"):
        prepare_datasets([ct], ct / "prepared", show_progress=False)
    with pytest.raises(ValueError, match="overlaps the source"):
        prepare_datasets([ct], tmp_path, show_progress=False)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        prepare_datasets([ct], junk, show_progress=False)
    twin = tmp_path / "raw2" / "Dataset009_Abdomen"
    shutil.copytree(ct, twin)
    with pytest.raises(ValueError, match="ct_Abdomen"):
        prepare_datasets([ct, twin], tmp_path / "o1", show_progress=False)
    with pytest.raises(ValueError, match="given twice"):
        prepare_datasets([ct, tmp_path / "raw" / ".." / "raw" / ct.name], tmp_path / "o5")
    with pytest.raises(ValueError, match="workers"):
        prepare_datasets([ct], tmp_path / "o2", workers=0)
    with pytest.raises(ValueError, match="spacing"):
        prepare_datasets([ct], tmp_path / "o3", target_spacing=(1.5, 1.5))
    with pytest.raises(FileNotFoundError, match="nope"):
        prepare_datasets([tmp_path / "nope"], tmp_path / "o4")
    assert not (tmp_path / "o1").exists()


def test_prepared_output_is_a_valid_source(tmp_path: Path, prepared) -> None:
    """Class folders of a prepared set (per-class layout) can be prepared again."""
    root, *_ = prepared
    out = root / "out"
    result = prepare_datasets(
        [out / "liver", out / "kidney_left"], tmp_path / "again", show_progress=False
    )
    assert result.kept == 7 and result.cases_failed == 0
    assert {r["class_name"] for r in result.records} == {"liver", "kidney_left"}
    assert {r["components_removed"] for r in result.records} == {0}


# ---------------------------------------------------------------------------------------------
# other layouts, the category catalogue, broken cases

#: Size rules off: the replicas' 16³ volumes hold structures far below 1 cm³.
LENIENT = CleaningConfig(min_volume_mm3=0, min_extent_mm=0, max_background_fraction=1.0)


def test_manifest_broken_cases_write_nothing_and_the_rest_continues(tmp_path: Path) -> None:
    study = replicas.manifest(tmp_path / "raw")
    # p2's label holds the values 1 and 2, but the row names only 1.
    replicas.write(
        study / "seg" / "p2b.nii.gz",
        replicas.label_map({1: replicas.BOX_C, 2: replicas.BOX_D}),
    )
    (study / "manifest.csv").write_text(
        "case,image,label,modality,labels\n"
        "p1,img/p1.nii.gz,seg/p1.nii.gz,CT,1=Liver;2=liver tumour;9=spleen\n"
        "gone,img/nope.nii.gz,seg/p1.nii.gz,CT,1=liver\n"
        "p1,img/p1.nii.gz,seg/p1.nii.gz,CT,1=Liver;2=liver tumour\n"
        "p2,img/p2.nii.gz,seg/p2b.nii.gz,MR,1=spleen\n"
        "p3,img/p3.nii.gz,seg/p3.nii.gz,CT,3=prostate/uterus\n"
    )
    out = tmp_path / "out"
    result = prepare_datasets([study / "manifest.csv"], out, cleaning=LENIENT, show_progress=False)
    got = sorted((r["case"], r["class_name"] or "", r["status"], r["rule"]) for r in result.records)
    assert got == [
        ("gone", "", "skipped", "missing_file"),
        ("p1", "", "skipped", "duplicate_row"),
        ("p1", "liver", "kept", None),
        ("p1", "liver_tumor", "kept", None),
        ("p1", "spleen", "dropped", "empty"),  # named in the row, absent from the file
        ("p2", "spleen", "error", "integrity:unexpected_labels"),
        ("p3", "prostate_uterus", "kept", None),
    ]
    messages = {r["case"]: r["message"] for r in result.records if r["status"] != "kept"}
    assert "line 3: image not found" in messages["gone"]
    assert "label values [2] are not declared (declared: [0, 1])" in messages["p2"]
    assert (result.cases, result.cases_failed, result.cases_skipped) == (5, 1, 2)
    assert not list(out.rglob("p2.nii.gz"))  # nothing written for the broken case
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("*/*/labelsTr/*.nii.gz")) == [
        "liver/ct_study/labelsTr/p1.nii.gz",
        "liver_tumor/ct_study/labelsTr/p1.nii.gz",
        "prostate_uterus/ct_study/labelsTr/p3.nii.gz",
    ]
    # Original names stay in the manifest; the unmapped one is reported, not guessed.
    tumour = _records(result, case="p1", class_name="liver_tumor")[0]
    assert (tumour["source_class"], tumour["category_mapped"]) == ("liver tumour", True)
    assert result.unmapped == ["prostate/uterus"]
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["unmapped_names"] == {
        "prostate/uterus": {"class_name": "prostate_uterus", "datasets": ["study"], "masks": 1}
    }
    catalogue = json.loads((out / "catalogue.json").read_text(encoding="utf-8"))
    assert catalogue["unmapped"] == ["prostate_uterus"]
    assert catalogue["categories"]["liver_tumor"]["source_names"] == ["liver tumour"]
    assert catalogue["categories"]["liver_tumor"]["group"] == "lesion"


def test_totalsegmentator_subject_is_one_case_with_many_masks(tmp_path: Path) -> None:
    ds = replicas.totalsegmentator(tmp_path / "raw")
    out = tmp_path / "out"
    result = prepare_datasets([ds], out, cleaning=LENIENT, show_progress=False, histograms=False)
    assert (result.cases, result.cases_failed, result.kept) == (2, 0, 8)
    folder = "ct_Totalsegmentator_dataset_v201"
    for case in ("s0000", "s0001"):
        recs = sorted(
            (r["source_class"], r["class_name"], r["status"], r["rule"], Path(r["label"]).name)
            for r in _records(result, case=case)
        )
        assert recs == [
            ("kidney_left", "kidney_left", "kept", None, "segmentations"),
            ("kidney_right", "kidney_right", "kept", None, "segmentations"),
            ("liver", "liver", "kept", None, "segmentations"),
            ("rib_left_3", "rib_left_3", "dropped", "empty", "segmentations"),
            ("vertebrae_L1", "vertebrae_l1", "kept", None, "segmentations"),
        ]
        mask = read_volume(out / "vertebrae_l1" / folder / "labelsTr" / f"{case}.nii.gz")
        assert mask.array[replicas.BOX_D].all() and mask.array.sum() == 125
    # One resampled image per subject in the cache, however many masks it has.
    assert len(list((out / ".prepare" / "cache").rglob("s0000-*_image.nii.gz"))) == 1
    again = prepare_datasets([ds], out, cleaning=LENIENT, show_progress=False, histograms=False)
    assert again.cases_resumed == 2

    # One mask of a subject on another grid: the whole subject is an error, nothing written.
    bad = ds / "s0001" / "segmentations" / "liver.nii.gz"
    replicas.write(bad, replicas.mask(replicas.BOX_A)[:, :, :12])
    third = prepare_datasets([ds], out, cleaning=LENIENT, show_progress=False, histograms=False)
    assert third.cases_failed == 1
    assert {(r["status"], r["rule"]) for r in _records(third, case="s0001")} == {
        ("error", "integrity:shape")
    }
    assert all(r["message"].startswith("liver.nii.gz: ") for r in _records(third, case="s0001"))
    assert not list(out.rglob("s0001.nii.gz"))
    assert len(list(out.rglob("labelsTr/s0000.nii.gz"))) == 4


def test_brats_sequences_become_separate_entries(tmp_path: Path) -> None:
    ds = replicas.brats2021(tmp_path / "raw")
    out = tmp_path / "out"
    result = prepare_datasets([ds], out, cleaning=LENIENT, show_progress=False, histograms=False)
    assert (result.cases, result.kept) == (4, 12)
    case = "BraTS2021_00000"
    for seq in ("flair", "t1", "t1ce", "t2"):
        [rec] = _records(result, sequence=seq, class_name="enhancing_tumor")
        assert (rec["modality"], rec["source_class"], rec["label_value"]) == (
            "MR",
            "enhancing tumor",
            4,
        )
        written = read_volume(
            out / "enhancing_tumor" / f"mr_BraTS2021_{seq}/imagesTr/{case}.nii.gz"
        )
        source = read_volume(ds / case / f"{case}_{seq}.nii.gz")
        np.testing.assert_allclose(written.array, source.array)
    found = sorted({(c.dataset, c.modality) for c in discover_dataset(out)})
    assert found == [("BraTS2021_" + s, "MR") for s in ("flair", "t1", "t1ce", "t2")]
