"""``sammed3d prepare`` through ``cli.main``: exit codes, output files, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sammed3d.cli import main
from sammed3d.io import Volume, write_volume


def _dataset(root: Path) -> Path:
    ds = root / "Dataset007_Spleen"
    (ds / "imagesTr").mkdir(parents=True)
    meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "Spleen": 1, "tiny": 2}}
    (ds / "dataset.json").write_text(json.dumps(meta))
    image = np.full((32, 32, 32), -1000.0, np.float32)
    image[2:30, 2:30, :] = 50.0
    label = np.zeros((32, 32, 32), np.uint8)
    label[8:24, 8:24, 8:24] = 1
    label[26:29, 26:29, 26:29] = 2
    write_volume(Volume(image, (1.5,) * 3), ds / "imagesTr" / "s1_0000.nii.gz")
    write_volume(Volume(label, (1.5,) * 3), ds / "labelsTr" / "s1.nii.gz")
    return ds


def test_prepare_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = _dataset(tmp_path / "raw")
    out = tmp_path / "out"
    argv = ["prepare", str(ds), "--output", str(out), "--no-progress", "--no-histograms"]
    assert main([*argv, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["cases"], summary["kept"], summary["dropped"]) == (1, 1, 1)
    assert (out / "spleen" / "ct_Spleen" / "labelsTr" / "s1.nii.gz").is_file()
    assert not list(out.glob("report_*.png"))
    records = [
        json.loads(line)
        for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert {(r["class_name"], r["status"], r["rule"]) for r in records} == {
        ("spleen", "kept", None),
        ("tiny", "dropped", "min_volume"),
    }
    # Resumed run; then rules from the command line change the outcome.
    assert main(argv) == 0
    assert "1 taken from an earlier run" in capsys.readouterr().out
    assert (
        main([*argv, "--min-volume", "10", "--min-extent", "1", "--max-background", "1", "--json"])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["kept"] == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--spacing", "1", "2"], "1 or 3 values"),
        (["--paired", " , "], "--paired"),
        (["--workers", "0"], "workers"),
        (["--max-background", "2"], "--max-background: expected a fraction in [0, 1], got 2"),
        (["--spacing", "0"], "--spacing: expected positive spacings in mm, got 0"),
        (["--min-volume", "-1"], "--min-volume: expected a finite number >= 0, got -1"),
        (["--min-extent", "nan"], "--min-extent: expected a finite number >= 0, got nan"),
        (["--background-crop", "0"], "--background-crop: expected a cube edge >= 1 voxel"),
        (["--max-components", "-1"], "--max-components: expected a number >= 0"),
        (["--workers", "0"], "--workers: expected a number of processes >= 1, got 0"),
        (["--paired", "kidney,,lung"], "--paired: expected comma-separated class names without"),
    ],
)
def test_prepare_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    ds = _dataset(tmp_path / "raw")
    code = main(["prepare", str(ds), "-o", str(tmp_path / "out"), "--no-progress", *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_prepare_summary_is_said_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One summary line, with the singular for one case (it was printed and logged)."""
    ds = _dataset(tmp_path / "raw")
    argv = ["prepare", str(ds), "-o", str(tmp_path / "out"), "--no-progress", "--no-histograms"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    both = captured.out + captured.err
    line = "prepared 1 of 1 case (0 failed, 0 skipped; 0 taken from an earlier run): "
    assert f"{line}1 mask kept, 1 dropped" in captured.out
    assert both.count("taken from an earlier run)") == 1 and "1 cases" not in both


def test_prepare_missing_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prepare", str(tmp_path / "nope"), "-o", str(tmp_path / "out")]) == 2
    assert "source dataset not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_prepare_layouts_and_unknown_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.data import replicas

    kits = replicas.kits(tmp_path / "raw")
    base = ["prepare", "--no-progress", "--no-histograms", "--min-volume", "0", "--min-extent", "0"]
    assert main([*base, str(kits), "-o", str(tmp_path / "o1"), "--layout", "case-folders"]) == 0
    printed = capsys.readouterr().out
    assert "2 of 2 cases (0 failed, 0 skipped; 0 taken from an earlier run)" in printed
    assert (
        tmp_path / "o1" / "kidney_tumor" / "ct_KiTS" / "labelsTr" / "case_00000.nii.gz"
    ).is_file()

    assert main([*base, str(kits), "-o", str(tmp_path / "o2"), "--layout", "bids"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no derivatives/ folder") and len(err.splitlines()) == 1

    mystery = tmp_path / "mystery"
    (mystery / "scans").mkdir(parents=True)
    (mystery / "scans" / "a.nii.gz").write_bytes(b"")
    assert main([*base, str(mystery), "-o", str(tmp_path / "o3")]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"error: unknown dataset layout at {mystery}") and len(err.splitlines()) == 1
    )
    assert "TotalSegmentator" in err and "write a manifest CSV (docs/data.md" in err
    assert not (tmp_path / "o3").exists()

    study = replicas.manifest(tmp_path / "raw")  # unmapped names are printed as a note
    (study / "manifest.csv").write_text(
        "image,label,modality,labels\nimg/p3.nii.gz,seg/p3.nii.gz,CT,3=prostate/uterus\n"
    )
    assert main([*base, str(study), "-o", str(tmp_path / "o4"), "--max-background", "1"]) == 0
    captured = capsys.readouterr()
    note = "note: 1 class name(s) not in the category catalogue, kept as written: prostate/uterus"
    assert (captured.out + captured.err).count(note) == 1  # said once (it was said twice)
    assert "see 'unmapped_names' in" in captured.err


def test_evaluate_reads_other_layouts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``evaluate`` shares the discovery: ``--layout`` and the unknown-layout error."""
    from tests.data import replicas

    lits = replicas.lits(tmp_path / "raw")
    argv = ["evaluate", "--method", "region-growing", "--clicks", "1", "--no-progress"]
    out = tmp_path / "eval"
    assert main([*argv, "--data", str(lits), "--layout", "case-folders", "--output", str(out)]) == 0
    rows = (out / "per_click.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 1 + 4  # header + (2 cases x 2 classes) x 1 click
    brats = replicas.brats2021(tmp_path / "raw")  # 4 sequences share one label map
    assert main([*argv, "--data", str(brats), "--output", str(tmp_path / "e1")]) == 0
    rows = (tmp_path / "e1" / "per_click.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 1 + 12
    assert sum("BraTS2021_t1ce" in r for r in rows) == 3
    capsys.readouterr()
    mystery = tmp_path / "mystery"
    mystery.mkdir()
    code = main([*argv, "--data", str(mystery), "--output", str(tmp_path / "e2")])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: unknown dataset layout at")


def test_option_defaults_come_from_cleaning_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """One source of truth: the parser's defaults are CleaningConfig's, and follow it."""
    import dataclasses

    from sammed3d.cli import build_parser
    from sammed3d.cli.prepare import cleaning_config
    from sammed3d.data.cleaning import CleaningConfig

    args = build_parser(["prepare"]).parse_args(["prepare", "src", "-o", "out"])
    assert cleaning_config(args) == CleaningConfig()
    fields = {f.name: f for f in dataclasses.fields(CleaningConfig)}
    options = {  # parser dest -> field
        "min_volume": "min_volume_mm3",
        "min_extent": "min_extent_mm",
        "max_background": "max_background_fraction",
        "background_crop": "background_crop",
        "max_components": "max_components",
        "connectivity": "connectivity",
        "split_paired": "split_paired",
    }
    for dest, name in options.items():
        assert getattr(args, dest) == fields[name].default, dest
    assert args.paired is None  # not given: the dataclass's list

    monkeypatch.setattr(fields["max_components"], "default", 3)
    args = build_parser(["prepare"]).parse_args(["prepare", "src", "-o", "out", "--no-split"])
    assert args.max_components == 3 and args.split_paired is False
    paired = build_parser(["prepare"]).parse_args(["prepare", "s", "-o", "o", "--paired", "Lung"])
    assert cleaning_config(paired).paired_classes == ("lung",)


def test_prepare_that_keeps_no_mask_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 0 with nothing to train on used to pass silently: a warning names the rules."""
    ds = _dataset(tmp_path / "raw")
    argv = ["prepare", str(ds), "-o", str(tmp_path / "out"), "--no-progress", "--no-histograms"]
    assert main([*argv, "--min-volume", "100000"]) == 0
    captured = capsys.readouterr()
    assert "0 masks kept, 2 dropped" in captured.out
    assert "dropped 2 masks: 2 smaller than 100000 mm³ (--min-volume);" in captured.out
    assert "warning: no mask was kept: nothing here to train on" in captured.err
    assert main([*argv, "--min-volume", "10", "--min-extent", "1", "--max-background", "1"]) == 0
    assert "no mask was kept" not in capsys.readouterr().err


def test_another_split_into_the_same_folder_is_refused(tmp_path: Path, capsys) -> None:
    """It used to replace the manifest's records of the first split (their files unlisted)."""
    ds = _dataset(tmp_path / "raw")
    (ds / "imagesTs").mkdir()
    for name in ("imagesTr/s1_0000.nii.gz", "labelsTr/s1.nii.gz"):
        target = ds / name.replace("Tr/s1", "Ts/t1")
        target.parent.mkdir(exist_ok=True)
        target.write_bytes((ds / name).read_bytes())
    out = tmp_path / "out"
    argv = ["prepare", str(ds), "-o", str(out), "--no-progress", "--no-histograms"]
    assert main(argv) == 0
    manifest = (out / "manifest.jsonl").read_text()
    capsys.readouterr()
    assert main([*argv, "--split", "test"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert "holds the 'train' split of" in err and "use another --output" in err
    assert (out / "manifest.jsonl").read_text() == manifest  # untouched
    assert main([*argv[:3], str(tmp_path / "test_out"), *argv[4:], "--split", "test"]) == 0


def _dataset_with_unpaired_image(root: Path) -> Path:
    """``_dataset`` with 3 cases (each: Spleen kept, tiny dropped by min_volume), and an
    image whose label file is missing."""
    ds = _dataset(root)
    for case in ("s2", "s3"):
        for name in (f"imagesTr/{case}_0000.nii.gz", f"labelsTr/{case}.nii.gz"):
            (ds / name).write_bytes((ds / name.replace(case, "s1")).read_bytes())
    (ds / "imagesTr" / "s4_0000.nii.gz").write_bytes((ds / "imagesTr/s1_0000.nii.gz").read_bytes())
    return ds


def test_counts_agree_and_drops_are_explained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It said "3 case(s) to prepare", then "prepared 4 cases" (the 4th an image without its
    label, counted as failed), and why masks were dropped was in report.json only."""
    ds = _dataset_with_unpaired_image(tmp_path / "raw")
    argv = ["prepare", str(ds), "-o", str(tmp_path / "out"), "--no-progress", "--no-histograms"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    out, err = captured.out, captured.err
    assert "4 case(s) found in 1 source(s): 3 to prepare, 1 skipped" in err
    counts = "prepared 3 of 4 cases (0 failed, 1 skipped; 0 taken from an earlier run): "
    assert f"{counts}3 masks kept, 3 dropped" in out
    assert (
        "dropped 3 masks: 3 smaller than 1000 mm³ (--min-volume); see 'by_rule' in report.json"
        in out
    )
    image, missing = ds / "imagesTr" / "s4_0000.nii.gz", ds / "labelsTr" / "s4.nii.gz"
    assert f"warning: skipped case Spleen/s4: no label for {image}: expected {missing}\n" in err
    assert (
        "warning: 1 case skipped (1 with a missing image or label file) and not prepared; "
        "see 'skipped' in report.json" in err
    )
    assert "failed (" not in err and "no mask was kept" not in err

    assert main([*argv, "--json"]) == 0  # resumed; the same counts, per rule
    summary = json.loads(capsys.readouterr().out)
    assert {k: summary[k] for k in ("cases", "cases_resumed", "cases_failed")} == {
        "cases": 4,
        "cases_resumed": 3,
        "cases_failed": 0,
    }
    assert summary["cases_skipped"] == 1 and summary["skipped_by_rule"] == {"missing_file": 1}
    assert summary["dropped_by_rule"] == {"min_volume": 3}


def test_drops_of_several_rules_are_counted_per_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds = _dataset(tmp_path / "raw")
    meta = json.loads((ds / "dataset.json").read_text())
    meta["labels"]["absent"] = 3  # declared, in no voxel: "empty"
    (ds / "dataset.json").write_text(json.dumps(meta))
    argv = ["prepare", str(ds), "-o", str(tmp_path / "out"), "--no-progress", "--no-histograms"]
    assert main([*argv, "--min-volume", "50", "--max-background", "0.5"]) == 0
    out = capsys.readouterr().out
    assert (
        "dropped 3 masks: 1 empty (the class is absent from the case), 1 with background over "
        "50% of the volume (--max-background), 1 with a bounding-box side under 15 mm "
        "(--min-extent); "
        "see 'by_rule' in report.json"
    ) in out


def test_failed_cases_are_counted_with_their_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds = _dataset_with_unpaired_image(tmp_path / "raw")
    label = ds / "labelsTr" / "s2.nii.gz"
    write_volume(Volume(np.zeros((32, 32, 30), np.uint8), (1.5,) * 3), label)  # another grid
    argv = ["prepare", str(ds), "-o", str(tmp_path / "out"), "--no-progress", "--no-histograms"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    counts = "prepared 2 of 4 cases (1 failed, 1 skipped; 0 taken from an earlier run)"
    assert counts in captured.out
    assert "warning: 1 case failed (1 integrity:shape); see 'errors' in report.json" in captured.err


def test_nothing_prepared_when_every_case_is_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manifest whose every label file is missing: exit 1, not a silent empty output."""
    from tests.data import replicas

    study = replicas.manifest(tmp_path / "raw")
    for label in (study / "seg").iterdir():
        label.unlink()
    out = tmp_path / "out"
    assert main(["prepare", str(study), "-o", str(out), "--no-progress", "--split", "train"]) == 1
    captured = capsys.readouterr()
    manifest, label = study / "manifest.csv", study / "seg" / "p1.nii.gz"
    said = f"warning: skipped case study/p1: {manifest} line 2: label not found: {label}\n"
    assert said in captured.err
    counts = "prepared 0 of 2 cases (0 failed, 2 skipped; 0 taken from an earlier run)"
    assert counts in captured.out
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("error: every case failed or was skipped (0 failed, 2 skipped); nothing")
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert [(s["case"], s["rule"]) for s in report["skipped"]] == [
        ("p1", "missing_file"),
        ("p2", "missing_file"),
    ]


def test_a_test_only_dataset_names_the_split_that_reads_it(tmp_path: Path, capsys) -> None:
    """prepare defaults to the train split; a dataset with labelsTs only is told which
    --split reads it instead of only that labelsTr is missing."""
    ds = _dataset(tmp_path / "raw")
    (ds / "imagesTr").rename(ds / "imagesTs")
    (ds / "labelsTr").rename(ds / "labelsTs")
    argv = ["prepare", str(ds), "-o", str(tmp_path / "out"), "--no-progress", "--no-histograms"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: expected a label folder {ds / 'labelsTr'} for split 'train'; labelled here: "
        "labelsTs (split 'test': --split test)"
    )
    assert main([*argv, "--split", "test"]) == 0
