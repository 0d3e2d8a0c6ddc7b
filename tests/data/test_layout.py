"""Dataset layout discovery: nnU-Net v2, MSD and the per-class layout (files only, no I/O)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sammed3d.data.dataset_json import normalise_modality, parse_dataset_json, read_dataset_json
from sammed3d.data.layout import (
    LAYOUT_NAMES,
    Case,
    Target,
    check_results_folder,
    detect_layout,
    discover_dataset,
    discover_dataset_lenient,
    find_datasets,
    iter_targets,
)
from sammed3d.data.layouts import READERS, per_class
from tests.data import replicas


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def _nnunet_v2(root: Path, cases: list[str], ts: list[str] = (), ending: str = ".nii.gz") -> Path:
    root.mkdir(parents=True)
    meta = {
        "channel_names": {"0": "ct"},
        "labels": {"background": 0, "Liver": 1, "Kidney": 2},
        "numTraining": len(cases),
        "file_ending": ending,
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    for c in cases:
        _touch(root / "imagesTr" / f"{c}_0000{ending}")
        _touch(root / "labelsTr" / f"{c}{ending}")
    for c in ts:
        _touch(root / "imagesTs" / f"{c}_0000{ending}")
        _touch(root / "labelsTs" / f"{c}{ending}")
    return root


def test_nnunet_v2_train(tmp_path: Path) -> None:
    root = _nnunet_v2(tmp_path / "Dataset003_Liver", ["b", "a", "c"])
    _touch(root / "imagesTr" / "a_0001.nii.gz")  # a second channel is not an unlabelled case
    cases = discover_dataset(root, split="train")
    assert [c.case_id for c in cases] == ["a", "b", "c"]
    a = cases[0]
    assert a.image == root / "imagesTr" / "a_0000.nii.gz"
    assert a.label == root / "labelsTr" / "a.nii.gz"
    assert a.labels == {"Liver": 1, "Kidney": 2}
    assert a.modality == "CT"
    assert a.dataset == "Liver"
    targets = iter_targets(cases)
    assert len(targets) == 6
    assert targets[0] == Target(
        "a", a.image, a.label, 1, "Liver", "CT", "Liver", declared_values=(1, 2)
    )
    assert [t.class_name for t in targets[:2]] == ["Liver", "Kidney"]


def test_auto_prefers_labelled_test_split(tmp_path: Path) -> None:
    root = _nnunet_v2(tmp_path / "Dataset001_X", ["a", "b"], ts=["t1"])
    assert [c.case_id for c in discover_dataset(root)] == ["t1"]
    assert [c.case_id for c in discover_dataset(root, "train")] == ["a", "b"]
    assert discover_dataset(root, "test")[0].image.parent.name == "imagesTs"
    # imagesTs without labels: auto falls back to the training split, "test" is an error.
    root2 = _nnunet_v2(tmp_path / "Dataset002_Y", ["a"])
    _touch(root2 / "imagesTs" / "u_0000.nii.gz")
    assert [c.case_id for c in discover_dataset(root2)] == ["a"]
    with pytest.raises(FileNotFoundError, match="labelsTs"):
        discover_dataset(root2, "test")


def test_msd_layout_and_other_ending(tmp_path: Path) -> None:
    root = tmp_path / "Task09_Spleen"
    root.mkdir()
    meta = {
        "name": "Spleen",
        "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "spleen"},
        "numTraining": 2,
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    for c in ("spleen_2", "spleen_10"):
        _touch(root / "imagesTr" / f"{c}.nii.gz")
        _touch(root / "labelsTr" / f"{c}.nii.gz")
    _touch(root / "labelsTr" / "._spleen_2.nii.gz")  # macOS resource file: ignored
    cases = discover_dataset(root, "train")
    assert [c.case_id for c in cases] == ["spleen_10", "spleen_2"]
    assert cases[0].image == root / "imagesTr" / "spleen_10.nii.gz"
    assert cases[0].labels == {"spleen": 1}
    assert cases[0].modality == "MR"
    assert cases[0].dataset == "Spleen"

    mha = _nnunet_v2(tmp_path / "Dataset004_M", ["x"], ending=".mha")
    assert discover_dataset(mha)[0].label.name == "x.mha"


def test_missing_files_are_named(tmp_path: Path) -> None:
    root = _nnunet_v2(tmp_path / "Dataset005_Z", ["a", "b"])
    (root / "imagesTr" / "b_0000.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"b_0000\.nii\.gz"):
        discover_dataset(root)
    cases, problems = discover_dataset_lenient(root)
    assert [c.case_id for c in cases] == ["a"]
    assert [p.case_id for p in problems] == ["b"]

    _touch(root / "imagesTr" / "b_0000.nii.gz")
    _touch(root / "imagesTr" / "orphan_0000.nii.gz")
    with pytest.raises(FileNotFoundError, match=r"labelsTr.orphan\.nii\.gz"):
        discover_dataset(root)


@pytest.mark.parametrize(
    ("setup", "error", "match"),
    [
        ("missing", FileNotFoundError, "not found"),
        ("unknown", ValueError, "unknown dataset layout"),
        ("empty_labels", ValueError, "no label files"),
        ("bad_json", ValueError, "not valid JSON"),
    ],
)
def test_layout_errors(tmp_path: Path, setup: str, error: type, match: str) -> None:
    root = tmp_path / "ds"
    if setup == "unknown":
        _touch(root / "somefile.txt")
        (root / "random_dir").mkdir()
    elif setup == "empty_labels":
        _nnunet_v2(root, [])
        (root / "labelsTr").mkdir()
        (root / "imagesTr").mkdir()
    elif setup == "bad_json":
        root.mkdir()
        (root / "dataset.json").write_text("{not json")
    with pytest.raises(error, match=match):
        discover_dataset(root)


def test_per_class_layout_all_roots(tmp_path: Path) -> None:
    top = tmp_path / "prepared"
    for cls, ds, cases in [
        ("liver", "ct_AMOS", ["c2", "c1"]),
        ("liver", "mr_CHAOS", ["m1"]),
        ("kidney_left", "ct_AMOS", ["c1"]),
        ("brain", "weird", ["w1"]),
    ]:
        for c in cases:
            _touch(top / cls / ds / "imagesTr" / f"{c}.nii.gz")
            _touch(top / cls / ds / "labelsTr" / f"{c}.nii.gz")
    _touch(top / "manifest.jsonl")
    (top / ".cache").mkdir()
    assert detect_layout(top) == "per-class" and per_class.level(top) == "root"
    cases = discover_dataset(top)
    assert len(cases) == 5
    assert [(c.dataset, c.case_id, next(iter(c.labels))) for c in cases] == [
        ("AMOS", "c1", "kidney_left"),
        ("AMOS", "c1", "liver"),
        ("AMOS", "c2", "liver"),
        ("CHAOS", "m1", "liver"),
        ("weird", "w1", "brain"),
    ]
    mods = {c.dataset: c.modality for c in cases}
    assert mods == {"AMOS": "CT", "CHAOS": "MR", "weird": "unknown"}
    assert all(c.labels[next(iter(c.labels))] == 1 for c in cases)

    assert detect_layout(top / "liver") == "per-class" and per_class.level(top / "liver") == "class"
    assert len(discover_dataset(top / "liver")) == 3
    one = discover_dataset(top / "liver" / "mr_CHAOS")
    assert one == [
        Case(
            "m1",
            top / "liver/mr_CHAOS/imagesTr/m1.nii.gz",
            top / "liver/mr_CHAOS/labelsTr/m1.nii.gz",
            {"liver": 1},
            "MR",
            "CHAOS",
        )
    ]


def test_per_class_validation_split(tmp_path: Path) -> None:
    folder = tmp_path / "liver" / "ct_X"
    _touch(folder / "imagesTr" / "a.nii.gz")
    _touch(folder / "labelsTr" / "a.nii.gz")
    _touch(folder / "imagesVal" / "v.nii.gz")
    _touch(folder / "labelsVal" / "v.nii.gz")
    assert [c.case_id for c in discover_dataset(folder)] == ["v"]
    assert [c.case_id for c in discover_dataset(folder, "train")] == ["a"]
    with pytest.raises(ValueError, match="split"):
        discover_dataset(folder, "val")  # type: ignore[arg-type]


def test_dataset_json_flavours_and_errors(tmp_path: Path) -> None:
    both = parse_dataset_json(
        {"channel_names": {"0": "T2"}, "labels": {"background": 0, "a": 2, "b": [3]}}
    )
    assert both.labels == {"a": 2, "b": 3}
    assert both.modality == "MR"
    assert both.label_values == frozenset({0, 2, 3})
    with pytest.raises(ValueError, match="share the value 1"):
        parse_dataset_json({"labels": {"a": 1, "b": 1}})
    with pytest.raises(ValueError, match="no foreground"):
        parse_dataset_json({"labels": {"background": 0}})
    with pytest.raises(ValueError, match="file_ending"):
        parse_dataset_json({"labels": {"a": 1}, "file_ending": "nii"})
    with pytest.raises(ValueError, match="missing required key 'labels'"):
        parse_dataset_json({"channel_names": {"0": "CT"}})
    with pytest.raises(ValueError, match="numTraining"):
        parse_dataset_json({"labels": {"a": 1}, "numTraining": "3"})
    with pytest.raises(FileNotFoundError):
        read_dataset_json(tmp_path / "nope.json")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("CT", "CT"),
        ("ct", "CT"),
        ("MRI", "MR"),
        ("T1", "MR"),
        ("FLAIR", "MR"),
        ("t2w", "MR"),
        ("MRI T2", "MR"),
        ("US", "US"),
        ("zscore", "unknown"),
        (None, "unknown"),
    ],
)
def test_normalise_modality(raw: object, expected: str) -> None:
    assert normalise_modality(raw) == expected


# ---------------------------------------------------------------------------------------------
# discovery across layouts


def test_mixed_root_with_two_layouts(tmp_path: Path) -> None:
    """A folder holding a TotalSegmentator and a KiTS dataset: each read by its own reader."""
    root = tmp_path / "collection"
    ts = replicas.totalsegmentator(root)
    (ts / "meta.csv").unlink()
    shutil.move(replicas.kits(tmp_path / "download"), root / "kits23")
    assert [(r.name, f.name) for r, f in find_datasets(root)] == [
        ("totalsegmentator", "Totalsegmentator_dataset_v201"),
        ("case-folders", "kits23"),
    ]
    targets = iter_targets(discover_dataset(root))
    rows = [(t.dataset, t.case_id, t.modality, t.category, t.label_value) for t in targets]
    assert rows == [
        ("KiTS", case, "CT", category, value)
        for case in ("case_00000", "case_00001")
        for category, value in (("kidney", 1), ("kidney_tumor", 2), ("kidney_cyst", 3))
    ] + [
        ("Totalsegmentator_dataset_v201", case, "CT", category, 1)
        for case in ("s0000", "s0001", "s0002")
        for category in ("kidney_left", "kidney_right", "liver", "rib_left_3", "vertebrae_l1")
    ]


def test_mixed_root_with_nnunet_and_manifest(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _nnunet_v2(root / "Dataset003_Liver", ["a"])
    replicas.manifest(root)
    plan = find_datasets(root)
    assert [(r.name, f.name) for r, f in plan] == [
        ("nnunet", "Dataset003_Liver"),
        ("manifest", "study"),
    ]


def test_ambiguous_folder_asks_for_layout(tmp_path: Path) -> None:
    study = replicas.manifest(tmp_path)
    (study / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "a": 1}}))
    with pytest.raises(ValueError, match=r"several layouts \(nnunet and manifest\); choose one "
                       "with --layout NAME"):  # fmt: skip
        discover_dataset(study)
    assert [c.case_id for c in discover_dataset(study, "train", layout="manifest")] == ["p1", "p2"]


def test_unknown_folder_listing_is_cut_between_whole_names(tmp_path: Path) -> None:
    """A long listing ends after a whole name and says how many more there are."""
    root = tmp_path / "flat"
    names = [f"b{i:02d}.nii.gz" for i in range(30)]
    for name in names:
        _touch(root / name)
    with pytest.raises(ValueError) as info:
        discover_dataset(root)
    message = str(info.value)
    listing = message.split(" (found [", 1)[1].split("]):", 1)[0]
    shown, _, rest = listing.partition(", ... and ")
    assert rest.endswith(" more"), listing
    items = shown.split(", ")
    assert items == names[: len(items)]  # whole names, in order
    assert int(rest.removesuffix(" more")) == len(names) - len(items)
    assert 0 < len(shown) <= 160


def test_unknown_folder_listing_is_not_cut_when_short(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    _touch(root / "a.nii.gz")
    _touch(root / "in.nii")
    with pytest.raises(ValueError, match=r"\(found \[a\.nii\.gz, in\.nii\]\): looked"):
        discover_dataset(root)


def test_unknown_folder_lists_what_was_looked_for(tmp_path: Path) -> None:
    root = tmp_path / "mystery"
    _touch(root / "scan1.nii.gz")
    _touch(root / "notes" / "readme.txt")
    with pytest.raises(ValueError) as info:
        discover_dataset(root)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"unknown dataset layout at {root} (found [notes, scan1.nii.gz])")
    for reader in READERS:
        assert reader.looks_for in message
    assert "manifest CSV (docs/data.md, section 'Manifest')" in message
    with pytest.raises(ValueError, match="unknown layout 'kits'; choose one of nnunet, "
                       "per-class, totalsegmentator, case-folders, bids, manifest"):  # fmt: skip
        discover_dataset(root, layout="kits")
    with pytest.raises(ValueError, match="expected a dataset folder or a manifest .csv"):
        discover_dataset(root / "scan1.nii.gz")


def test_forced_layout_reads_only_that_layout(tmp_path: Path) -> None:
    ds = replicas.kits(tmp_path)
    assert len(discover_dataset(ds, layout="case-folders")) == 2
    with pytest.raises(FileNotFoundError, match="no derivatives/ folder"):
        discover_dataset(ds, layout="bids")
    with pytest.raises(ValueError, match="no TotalSegmentator subject folders"):
        discover_dataset(ds, layout="totalsegmentator")


def test_layout_names_match_the_cli_choices() -> None:
    from sammed3d.cli.prepare import LAYOUTS

    assert LAYOUTS == LAYOUT_NAMES


def test_import_does_not_load_torch() -> None:
    """``sammed3d.data.layout`` (readers and catalogue included) needs no torch.

    The package root is replaced by a bare namespace so that this checks the layout modules
    themselves, whatever ``sammed3d/__init__.py`` imports.
    """
    import subprocess
    import sys

    import sammed3d

    code = (
        "import sys, types\n"
        "pkg = types.ModuleType('sammed3d')\n"
        f"pkg.__path__ = [{str(Path(sammed3d.__file__).parent)!r}]\n"
        "sys.modules['sammed3d'] = pkg\n"
        "import sammed3d.data.layout, sammed3d.data.categories, sammed3d.data.layouts\n"
        "from sammed3d.data.categories import lookup_category\n"
        "assert lookup_category('Kidney L') == 'kidney_left'\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'monai')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


def test_one_case_per_image_merges_the_class_folders_of_a_scan(tmp_path: Path) -> None:
    """The per-class layout lists a scan once per class folder; per-image work (predict
    --data) wants it once, with every class's mask file."""
    from sammed3d.data.layout import one_case_per_image

    top = tmp_path / "per_class"
    scans = {"a": b"scan a", "b": b"scan b", "c": b"scan c"}
    for cls, ids in (("liver", "abc"), ("kidney", "ac"), ("spleen", "a")):
        for i in ids:
            image = _touch(top / cls / "ct_AMOS" / "imagesTr" / f"{i}.nii.gz")
            image.write_bytes(scans[i] + (b" cropped" if (cls, i) == ("kidney", "c") else b""))
            _touch(top / cls / "ct_AMOS" / "labelsTr" / f"{i}.nii.gz")
    linked = top / "spleen" / "ct_AMOS" / "imagesTr" / "b.nii.gz"  # a hard link, as prepare's
    linked.hardlink_to(top / "liver" / "ct_AMOS" / "imagesTr" / "b.nii.gz")
    _touch(top / "spleen" / "ct_AMOS" / "labelsTr" / "b.nii.gz")
    cases = discover_dataset(top, split="train")
    assert len(cases) == 7

    merged = one_case_per_image(cases)
    rows = [(c.case_id, sorted(c.labels), c.image.parts[-4]) for c in merged]
    assert rows == [
        ("a", ["kidney", "liver", "spleen"], "kidney"),
        ("b", ["liver", "spleen"], "liver"),
        ("c", ["kidney"], "kidney"),  # another image content (a crop): not the same scan
        ("c", ["liver"], "liver"),
    ]
    a = merged[0]
    assert a.labels == {"kidney": 1, "liver": 1, "spleen": 1}
    assert a.masks == {n: top / n / "ct_AMOS" / "labelsTr" / "a.nii.gz" for n in a.labels}
    assert [(p.parts[-4], v) for p, v in a.label_groups()] == [
        ("kidney", {"kidney": 1}),
        ("liver", {"liver": 1}),
        ("spleen", {"spleen": 1}),
    ]
    assert [t.label for t in iter_targets([a])] == [a.masks[n] for n in sorted(a.masks)]
    assert (a.dataset, a.modality, a.split, a.sequence) == ("AMOS", "CT", "train", None)
    assert merged[2].masks == {} and merged[2] == cases[5]  # an unmerged case is unchanged

    nnunet = discover_dataset(_nnunet_v2(tmp_path / "Dataset003_Liver", ["a", "b"]), "train")
    assert one_case_per_image(nnunet) == nnunet  # one label map per case: nothing to merge
    with pytest.raises(TypeError, match="expects Case objects"):
        one_case_per_image(["a.nii.gz"])  # type: ignore[list-item]


def test_results_are_refused_among_the_images_and_labels(tmp_path: Path) -> None:
    """A results folder that is the dataset folder, one that holds its images or labels, or
    one between the two (a dataset of a collection, a TotalSegmentator subject, a DICOM
    series) is refused, and so is one inside a folder of images or labels; a folder of its
    own beside them, also inside the dataset folder, is fine."""
    collection = tmp_path / "collection"
    root = _nnunet_v2(collection / "Dataset003_Liver", ["a", "b"])
    ts = replicas.totalsegmentator(collection)
    cases = discover_dataset(collection)
    expected = "output: expected a folder of its own for the results, got "
    refused = {
        collection: "the dataset folder itself",
        root: "a folder of the dataset (its images are in imagesTr)",
        root / "imagesTr": "which holds the dataset's images (e.g. a_0000.nii.gz)",
        root / "labelsTr": "which holds the dataset's labels (e.g. a.nii.gz)",
        ts / "s0002": "which holds the dataset's images and labels (e.g. ct.nii.gz)",
        ts / "s0002" / "segmentations": "which is the dataset's label",
    }
    for folder, reason in refused.items():
        with pytest.raises(ValueError) as exc:
            check_results_folder(folder, cases, root=collection)
        assert str(exc.value).startswith(f"{expected}{folder}, {reason}"), folder
    # the targets alone (the API's evaluate_targets): the folders that hold their files
    with pytest.raises(ValueError, match="which holds the dataset's labels"):
        check_results_folder(root / "labelsTr", iter_targets(cases))
    (root / "results").mkdir()
    for fine in (root / "results", collection / "new", tmp_path, root / "results" / "new"):
        check_results_folder(fine, cases, root=collection)
    # a folder inside one that holds the dataset's files, made or not (a trial wrote its
    # results into imagesTr/ev)
    (root / "imagesTr" / "made").mkdir()
    for inside in (root / "imagesTr" / "ev", root / "imagesTr" / "made", ts / "s0002" / "x"):
        with pytest.raises(ValueError, match=f"^{expected}{inside}, inside "):
            check_results_folder(inside, cases, root=collection)
    check_results_folder(root, cases)  # without the root, its own folders only
