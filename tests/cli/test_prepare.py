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
    assert "1 resumed" in capsys.readouterr().out
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
    assert "prepared 1 case (0 resumed, 0 failed): 1 mask kept, 1 dropped" in captured.out
    assert both.count("resumed, 0 failed)") == 1 and "1 cases" not in both


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
    assert "2 cases (0 resumed, 0 failed)" in printed
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
    assert "warning: no mask was kept (dropped: 2 by min_volume)" in captured.err
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
