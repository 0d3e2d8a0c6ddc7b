"""``sammed3d segment``: exit codes, one-line errors on bad input, output geometry."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from sammed3d import save_checkpoint
from sammed3d.cli import main
from sammed3d.io import Volume, read_volume, write_volume
from tests.volumes import write_not_volume

OBLIQUE = np.array([[0.96, -0.28, 0.0], [0.28, 0.96, 0.0], [0.0, 0.0, 1.0]])  # 16 degrees about z


def _image(shape=(40, 34, 18), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = 100 + 20 * rng.random(shape)
    img[10:25, 8:20, 4:12] += 400
    return img.astype(np.float32)


@pytest.fixture()
def ckpt(tmp_path: Path, tiny_model: torch.nn.Module) -> Path:
    return save_checkpoint(tiny_model, tmp_path / "tiny.pth")


@pytest.fixture()
def image(tmp_path: Path) -> Path:
    vol = Volume(_image(), (1.1, 0.9, 2.5), (5.0, -20.0, 40.0), OBLIQUE)
    return write_volume(vol, tmp_path / "ct.nrrd")


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_segment_writes_a_mask_on_the_input_grid(tmp_path, image, ckpt, capsys):
    out = tmp_path / "mask.nii.gz"
    argv = ["segment", str(image), "--point", "15", "14", "8", "--negative", "12", "10", "6"]
    argv += ["--checkpoint", str(ckpt), "--output", str(out), "--label", "3", "--no-extend"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "click 1/2 + at (15, 14, 8)" in printed and "click 2/2 - at (12, 10, 6)" in printed
    assert f"wrote {out}" in printed
    # an NRRD says no modality: the line says how to get the CT clamp (2026-12-03 re-trial)
    assert "modality: not CT (no clamp; the file does not say: --modality CT for a CT)" in printed
    src, mask = read_volume(image), read_volume(out)
    assert mask.shape == src.shape and mask.array.dtype == np.uint8
    assert set(np.unique(mask.array)) <= {0, 3}
    np.testing.assert_allclose(mask.spacing, src.spacing, rtol=1e-6)
    np.testing.assert_allclose(mask.origin, src.origin, atol=1e-4)
    np.testing.assert_allclose(mask.direction, src.direction, atol=1e-6)
    # the same clicks given in RAS millimetres give the same mask
    ras = src.affine @ np.array([15, 14, 8, 1.0])
    ras_neg = src.affine @ np.array([12, 10, 6, 1.0])
    out2 = tmp_path / "mask_mm.nrrd"
    argv2 = ["segment", str(image), "--coords", "ras", "--point", *map(str, ras[:3])]
    argv2 += ["--negative", *map(str, ras_neg[:3]), "--checkpoint", str(ckpt)]
    argv2 += ["--output", str(out2), "--label", "3", "--no-extend"]
    assert main(argv2) == 0
    np.testing.assert_array_equal(read_volume(out2).array, mask.array)


def test_checkpoint_from_environment(tmp_path, image, ckpt, monkeypatch, capsys):
    monkeypatch.setenv("SAMMED3D_CHECKPOINT", str(ckpt))
    out = tmp_path / "m.mha"
    assert main(["segment", str(image), "-p", "15", "14", "8", "-o", str(out)]) == 0
    assert out.exists()
    capsys.readouterr()  # the first run's output (random weights: maybe a large-mask warning)
    monkeypatch.setenv("SAMMED3D_CHECKPOINT", str(tmp_path / "missing.pth"))
    out2 = tmp_path / "m2.mha"
    assert main(["segment", str(image), "-p", "15", "14", "8", "-o", str(out2)]) == 2
    assert "SAMMED3D_CHECKPOINT" in _err(capsys)


def test_no_checkpoint_is_a_clear_error(tmp_path, image, monkeypatch, capsys):
    from sammed3d import paths

    monkeypatch.delenv("SAMMED3D_CHECKPOINT", raising=False)
    monkeypatch.setattr(paths, "BUNDLED_CHECKPOINT", tmp_path / "not_installed.pth")
    out = tmp_path / "m.nii.gz"
    assert main(["segment", str(image), "-p", "15", "14", "8", "-o", str(out)]) == 2
    assert "no checkpoint" in _err(capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["-p", "40", "14", "8"], "outside the image"),
        (["-p", "15", "-1", "8"], "outside the image"),
        (["-n", "15", "14", "8"], "first click must be positive"),
        ([], "at least one click"),
        (["-p", "15", "14", "8", "--label", "0"], "--label"),
        (["-p", "15", "14", "8", "--zoom-spacing", "-1"], "--zoom-spacing must be 0 (off)"),
        (["-p", "15", "14", "8", "--zoom-spacing", "2"], "must be finer than the 1.5 mm lattice"),
        (["-p", "15", "14", "8", "--fine-zoom-spacing", "-1"], "--fine-zoom-spacing must be 0"),
        (
            ["-p", "15", "14", "8", "--zoom-spacing", "0", "--fine-zoom-spacing", "0.5"],
            "--fine-zoom-spacing 0.5 needs zoom-in, which --zoom-spacing 0 turns off",
        ),
        (
            ["-p", "15", "14", "8", "--zoom-spacing", "1", "--fine-zoom-spacing", "1"],
            "--fine-zoom-spacing must be finer than --zoom-spacing (1 mm; 0: off), got 1",
        ),
        (["-p", "15", "14", "8", "--refine-boundary", "-3"], "--refine-boundary must be 0 (off)"),
        (["-p", "15", "14", "8", "--refine-boundary", "100"], "a width of at most 10 mm, got 100"),
        (["-p", "15", "14", "8", "--contrast-guard", "-0.4"], "--contrast-guard must be 0 (off)"),
        (["-p", "15", "14", "8", "--contrast-guard", "inf"], "a border contrast of at most 10"),
        (["-p", "15", "14", "8", "--rim-edit", "20"], "--rim-edit must be 0 (off) or a radius"),
    ],
)
def test_bad_clicks_are_one_line_errors(tmp_path, image, ckpt, capsys, extra, match):
    argv = ["segment", str(image), *extra, "--checkpoint", str(ckpt)]
    assert main([*argv, "-o", str(tmp_path / "m.nii.gz")]) == 2
    assert match in _err(capsys)


@pytest.mark.parametrize(
    ("flag", "bad"),
    [("--first-pick", "best"), ("--later-check", "yes"), ("--click-bounds", "positive")],
)
def test_an_unknown_rule_choice_is_a_usage_error(tmp_path, image, ckpt, capsys, flag, bad):
    argv = ["segment", str(image), "-p", "15", "14", "8", flag, bad]
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--checkpoint", str(ckpt), "-o", str(tmp_path / "m.nii.gz")])
    assert stop.value.code == 2
    assert f"{flag}: invalid choice: '{bad}'" in capsys.readouterr().err


def test_a_refused_click_is_told_under_it_and_in_the_last_line(
    tmp_path, image, ckpt, capsys, monkeypatch
):
    from sammed3d.inference import session as session_module

    # whatever the tiny model answers, the edge check refuses every later click
    monkeypatch.setattr(session_module, "later_click_refused", lambda *args: True)
    out = tmp_path / "m.nii.gz"
    argv = ["segment", str(image), "-p", "15", "14", "8", "-n", "12", "10", "6", "--no-extend"]
    argv += ["--checkpoint", str(ckpt), "-o", str(out), "--later-check", "edges"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "  edge check: the negative click at (12, 10, 6) was not taken" in printed
    assert f"wrote {out}: " in printed and " from 1 of the 2 clicks (" in printed
    # off: the same clicks are both taken
    assert main([*argv[:-1], "none", "--overwrite"]) == 0
    printed = capsys.readouterr().out
    assert "edge check" not in printed and "of the 2 clicks" not in printed


def test_what_the_library_logs_during_a_click_comes_under_its_line(
    tmp_path, image, ckpt, capsys, monkeypatch
):
    import logging

    from sammed3d.inference import session as session_module

    order: list[str] = []
    add_click = session_module.InteractiveSession.add_click

    def logged_click(self, coord, positive=True):
        logging.getLogger("sammed3d.inference.extend").info("budget reached")
        return add_click(self, coord, positive)

    class Spy(logging.Handler):
        def emit(self, record):
            order.append(record.getMessage())

    monkeypatch.setattr(session_module.InteractiveSession, "add_click", logged_click)
    monkeypatch.setattr("builtins.print", lambda *a, **k: order.append(" ".join(map(str, a))))
    spy = Spy()
    logging.getLogger("sammed3d").addHandler(spy)  # (the CLI resets the root's handlers)
    try:
        argv = ["segment", str(image), "-p", "15", "14", "8", "--no-extend"]
        assert main([*argv, "--checkpoint", str(ckpt), "-o", str(tmp_path / "m.nii.gz")]) == 0
    finally:
        logging.getLogger("sammed3d").removeHandler(spy)
    line = next(i for i, text in enumerate(order) if text.startswith("click 1/1 + at"))
    assert order.index("  budget reached") > line  # under the click's line, indented


def test_refuses_to_overwrite_the_input_and_bad_output_names(tmp_path, image, ckpt, capsys):
    before = image.read_bytes()
    argv = ["segment", str(image), "-p", "15", "14", "8", "--checkpoint", str(ckpt)]
    assert main([*argv, "-o", str(image)]) == 2
    assert "overwrite" in _err(capsys)
    assert image.read_bytes() == before
    assert main([*argv, "-o", str(tmp_path / "mask.png")]) == 2
    assert ".nii.gz" in _err(capsys)


def _write(array: np.ndarray, path: Path, spacing=None) -> Path:
    img = sitk.GetImageFromArray(array)
    if spacing:
        img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))
    return path


def _dicom_series(folder: Path, uid: str, modality: str = "CT", n: int = 6) -> None:
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(len(uid))
    for z in range(n):
        sl = sitk.GetImageFromArray((rng.random((30, 28)) * 800 - 300).astype(np.int16))
        for tag, value in {
            "0020|000e": uid,
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0008|0060": modality,
            "0020|0013": str(z + 1),
            "0020|0032": f"0\\0\\{2.0 * z}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": "0.8\\0.7",
        }.items():
            sl.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"{uid}_{z}.dcm"))
        writer.Execute(sl)


def test_dicom_series_input_reads_the_ct_modality(tmp_path, ckpt, capsys):
    folder = tmp_path / "series"
    _dicom_series(folder, "1.2.826.0.1.3680043.2.1125.7")
    out = tmp_path / "mask.nii.gz"
    argv = ["segment", str(folder), "-p", "14", "15", "3", "--checkpoint", str(ckpt)]
    assert main([*argv, "-o", str(out), "--no-extend"]) == 0
    assert "modality: CT" in capsys.readouterr().out
    assert read_volume(out).shape == (28, 30, 6)
    _dicom_series(folder, "1.2.826.0.1.3680043.2.1125.8")  # a second series in the folder
    assert main([*argv, "-o", str(tmp_path / "m2.nii.gz")]) == 2
    assert "2 DICOM series" in _err(capsys)


def _bad_inputs(tmp: Path) -> dict[str, tuple[Path, str]]:
    rng = np.random.default_rng(0)
    good = _image((12, 14, 16))
    cases: dict[str, tuple[Path, str]] = {}
    cases["2d"] = (_write(good[0], tmp / "slice.nii.gz"), "3-D")
    four = sitk.JoinSeries([sitk.GetImageFromArray(good)] * 3)
    sitk.WriteImage(four, str(tmp / "four.nii.gz"))
    cases["4d"] = (tmp / "four.nii.gz", "3-D")
    cases["constant"] = (_write(np.full((12, 14, 16), 5.0, np.float32), tmp / "c.nrrd"), "constant")
    cases["empty"] = (_write(np.zeros((12, 14, 16), np.float32), tmp / "z.mha"), "constant")
    nan = good.copy()
    nan[3, 4, 5] = np.nan
    cases["nan"] = (_write(nan, tmp / "nan.nii.gz"), "NaN")
    inf = good.copy()
    inf[1, 1, 1] = np.inf
    cases["inf"] = (_write(inf, tmp / "inf.nii.gz"), "infinite")
    label = (rng.random((12, 14, 16)) > 0.7).astype(np.uint8)
    cases["label"] = (_write(label, tmp / "label.nii.gz"), "label map")
    mask = rng.choice(np.float32([0, 0.999, 1]), size=(12, 14, 16))  # a mask saved as floats
    cases["float_label"] = (
        _write(mask, tmp / "mask.nii.gz"),
        "only 3 distinct values: 0, 0.999, 1",
    )
    full = _write(good, tmp / "full.nii")
    (tmp / "trunc.nii").write_bytes(full.read_bytes()[:500])
    cases["truncated"] = (tmp / "trunc.nii", "cannot read")
    gz = _write(good, tmp / "ok.nii.gz").read_bytes()
    (tmp / "trunc.nii.gz").write_bytes(gz[: len(gz) // 2])
    cases["truncated_gz"] = (tmp / "trunc.nii.gz", "cannot read")
    (tmp / "junk.nii.gz").write_bytes(gzip.compress(b"not an image at all" * 10))
    cases["junk"] = (tmp / "junk.nii.gz", "cannot read")
    # a picture under a volume ending (fresh-user trial: "not a valid NIfTI file")
    cases["png_as_nifti"] = (
        write_not_volume("png", tmp / "picture.nii.gz"),
        "it is a PNG image, not gzip-compressed NIfTI: sammed3d reads 3-D volumes",
    )
    (tmp / "image.png").write_bytes(b"\x89PNG")
    cases["extension"] = (tmp / "image.png", "unsupported file type")
    cases["missing"] = (tmp / "nope.nii.gz", "no such file")
    return cases


CASES = [
    "2d",
    "4d",
    "constant",
    "empty",
    "nan",
    "inf",
    "label",
    "float_label",
    "truncated",
    "truncated_gz",
    "junk",
    "png_as_nifti",
    "extension",
    "missing",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_images_are_one_line_errors(tmp_path, ckpt, capsys, case):
    path, match = _bad_inputs(tmp_path)[case]
    argv = ["segment", str(path), "-p", "1", "1", "1", "--checkpoint", str(ckpt)]
    assert main([*argv, "-o", str(tmp_path / "out.nii.gz")]) == 2
    err = _err(capsys)
    assert match in err
    assert not (tmp_path / "out.nii.gz").exists()


def test_label_image_can_be_forced(tmp_path, ckpt):
    label = (np.random.default_rng(0).random((12, 14, 16)) * 3).astype(np.uint8)
    path = _write(label, tmp_path / "label.nii.gz", spacing=(3.0, 3.0, 3.0))
    argv = ["segment", str(path), "-p", "5", "5", "5", "--checkpoint", str(ckpt), "--no-extend"]
    assert main([*argv, "-o", str(tmp_path / "o.nii.gz"), "--allow-label-image"]) == 0


def test_debug_shows_the_traceback(tmp_path, ckpt):
    path = tmp_path / "image.png"
    path.write_bytes(b"x")
    argv = ["segment", str(path), "-p", "1", "1", "1", "--checkpoint", str(ckpt), "--debug"]
    with pytest.raises(ValueError, match="unsupported"):
        main([*argv, "-o", str(tmp_path / "o.nii.gz")])


def test_nifti_sform_and_qform_survive_and_ras_clicks_use_the_sform(tmp_path, ckpt, capsys):
    """A registered NIfTI (sform code 4, qform code 1, 13 mm apart): the mask carries both
    unchanged, and ``--coords ras`` means what nibabel/FSL/Slicer show (the sform)."""
    import nibabel as nib

    qform = np.diag([1.1, 0.9, 2.5, 1.0])
    qform[:3, 3] = (-20.0, 15.0, 30.0)
    sform = qform.copy()
    sform[:3, 3] += (5.0, -12.0, 0.0)  # 13 mm away
    img = nib.Nifti1Image(_image(), None)
    img.set_qform(qform, code=1)
    img.set_sform(sform, code=4)
    src = tmp_path / "registered.nii.gz"
    nib.save(img, src)
    src_hdr = nib.load(src).header
    out = tmp_path / "mask.nii.gz"
    argv = ["segment", str(src), "-p", "15", "14", "8", "--checkpoint", str(ckpt), "--no-extend"]
    assert main([*argv, "-o", str(out)]) == 0
    hdr = nib.load(out).header
    for key in ("sform_code", "qform_code", "srow_x", "srow_y", "srow_z", "quatern_b",
                "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z"):  # fmt: skip
        assert hdr[key].tobytes() == src_hdr[key].tobytes(), key
    assert hdr["pixdim"][:4].tobytes() == src_hdr["pixdim"][:4].tobytes()
    np.testing.assert_allclose(nib.load(out).affine, sform)
    # the same voxel given in RAS mm of the sform gives the same mask
    ras = sform @ np.array([15, 14, 8, 1.0])
    out_ras = tmp_path / "mask_ras.nii.gz"
    argv_ras = ["segment", str(src), "--coords", "ras", "-p", *map(str, ras[:3])]
    assert main([*argv_ras, "--checkpoint", str(ckpt), "--no-extend", "-o", str(out_ras)]) == 0
    assert "click 1/1 + at (15, 14, 8)" in capsys.readouterr().out
    np.testing.assert_array_equal(
        np.asanyarray(nib.load(out_ras).dataobj), np.asanyarray(nib.load(out).dataobj)
    )


def test_dicom_series_with_a_gap_is_refused_or_read_onto_true_positions(tmp_path, ckpt, capsys):
    from tests.volumes import write_dicom_series

    files, _ = write_dicom_series(tmp_path / "series", n=12, dz=2.5, shape=(30, 28))
    files[6].unlink()
    argv = ["segment", str(tmp_path / "series"), "-p", "14", "15", "3", "--checkpoint", str(ckpt)]
    argv += ["--no-extend"]
    assert main([*argv, "-o", str(tmp_path / "m.nii.gz")]) == 2
    err = _err(capsys)
    assert "between IM0005.dcm and IM0007.dcm" in err and "1 slice(s) missing?" in err
    assert not (tmp_path / "m.nii.gz").exists()
    out = tmp_path / "m2.nii.gz"
    assert main([*argv, "-o", str(out), "--irregular-slices", "resample"]) == 0
    mask = read_volume(out)
    assert mask.shape == (28, 30, 12) and mask.spacing[2] == pytest.approx(2.5)


def test_existing_output_needs_overwrite(tmp_path, image, ckpt, capsys):
    out = tmp_path / "mask.nii.gz"
    out.write_bytes(b"an earlier result")
    argv = ["segment", str(image), "-p", "15", "14", "8", "--checkpoint", str(ckpt), "-o", str(out)]
    assert main([*argv, "--no-extend"]) == 2
    assert "exists; pass --overwrite" in _err(capsys)
    assert out.read_bytes() == b"an earlier result"
    assert main([*argv, "--no-extend", "--overwrite"]) == 0
    assert read_volume(out).shape == read_volume(image).shape


def test_an_empty_mask_is_a_warning_on_stderr(tmp_path, image, capsys):
    from sammed3d import build_model

    model = build_model("sam_med3d_tiny")
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # logits 0 everywhere: nothing is > 0
    blank = save_checkpoint(model, tmp_path / "blank.pth")
    out = tmp_path / "mask.nii.gz"
    argv = ["segment", str(image), "-p", "15", "14", "8", "--checkpoint", str(blank)]
    assert main([*argv, "-o", str(out), "--no-extend"]) == 0
    captured = capsys.readouterr()
    assert "0 voxels" in captured.out
    assert "warning: the mask is empty" in captured.err
    assert out.exists() and not read_volume(out).array.any()


def test_a_fractional_click_is_rounded_once_and_shown(tmp_path, image, ckpt, capsys):
    out = tmp_path / "frac.nii.gz"
    argv = ["segment", str(image), "-p", "14.5", "13.6", "8.4", "--checkpoint", str(ckpt)]
    assert main([*argv, "-o", str(out), "--no-extend"]) == 0
    assert "click 1/1 + at (15, 14, 8)" in capsys.readouterr().out  # 14.5 -> 15: ties go up
    whole = tmp_path / "whole.nii.gz"
    argv = ["segment", str(image), "-p", "15", "14", "8", "--checkpoint", str(ckpt)]
    assert main([*argv, "-o", str(whole), "--no-extend"]) == 0
    np.testing.assert_array_equal(read_volume(out).array, read_volume(whole).array)


def test_every_click_is_checked_before_the_model_runs(tmp_path, image, ckpt, capsys, monkeypatch):
    from sammed3d.inference import SamMed3DPredictor

    def no_model(*args, **kwargs):
        raise AssertionError("the model ran before the clicks were checked")

    monkeypatch.setattr(SamMed3DPredictor, "predict_tile", no_model)
    argv = ["segment", str(image), "-p", "15", "14", "8", "-n", "15", "14", "17.5"]
    assert main([*argv, "--checkpoint", str(ckpt), "-o", str(tmp_path / "m.nii.gz")]) == 2
    assert _err(capsys) == (
        "error: click 2 at native voxel index (15, 14, 17.5) is outside the image: native "
        "voxel indices (i, j, k) must lie in [0, 39] x [0, 33] x [0, 17]"
    )


def test_segment_reads_checks_and_resolves_once_and_builds_no_full_mask_per_click(
    tmp_path, image, ckpt, monkeypatch, capsys
):
    from sammed3d import paths
    from sammed3d.inference import InteractiveSession, predictor, validation

    counts = {"read": 0, "check": 0, "checkpoint": 0, "mask": 0}

    def counted(key, fn):
        def wrapper(*args, **kwargs):
            counts[key] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(validation, "read_volume", counted("read", validation.read_volume))
    check = counted("check", validation.check_image_array)
    monkeypatch.setattr(validation, "check_image_array", check)
    monkeypatch.setattr(predictor, "check_image_array", check)
    monkeypatch.setattr(
        paths, "require_checkpoint", counted("checkpoint", paths.require_checkpoint)
    )
    mask = InteractiveSession.mask
    monkeypatch.setattr(
        InteractiveSession,
        "mask",
        property(counted("mask", mask.fget)),  # type: ignore[attr-defined]
    )
    argv = ["segment", str(image), "-p", "15", "14", "8", "-n", "12", "10", "6", "-p", "16", "14"]
    argv += ["8", "--checkpoint", str(ckpt), "-o", str(tmp_path / "m.nii.gz")]
    assert main(argv) == 0
    assert counts == {"read": 1, "check": 1, "checkpoint": 1, "mask": 0}
    assert f"loaded {ckpt} on " in capsys.readouterr().out


def test_a_physical_click_outside_the_image_is_named_as_typed(tmp_path, image, ckpt, capsys):
    """A RAS/LPS click outside the image is reported in the millimetres the user typed, not
    only as the voxel index it converts to."""
    argv = ["segment", str(image), "--coords", "ras", "-p", "9000", "-250.5", "3"]
    assert main([*argv, "--checkpoint", str(ckpt), "-o", str(tmp_path / "m.nii.gz")]) == 2
    err = _err(capsys)
    assert "outside the image" in err and "click 1 was given as RAS (9000, -250.5, 3) mm" in err
    assert not (tmp_path / "m.nii.gz").exists()
    # and where the image is, in the same millimetres: the box around its voxels' outer faces
    vol = read_volume(image)
    n = np.array(vol.shape, dtype=float)
    corners = np.array([[-0.5 + n[a] * ((c >> a) & 1) for a in range(3)] for c in range(8)])
    ras = corners @ vol.affine[:3, :3].T + vol.affine[:3, 3]
    lo, hi = ras.min(axis=0), ras.max(axis=0)
    spans = ", ".join(f"{a} {lo[i]:.1f} to {hi[i]:.1f}" for i, a in enumerate("xyz"))
    assert f"the image spans {spans} mm (RAS)" in err


def test_a_mask_over_half_the_image_is_a_warning(tmp_path, image, ckpt, capsys, monkeypatch):
    """A click on the background often gives a mask of most of the image: say so (exit 0)."""
    from sammed3d.inference import InteractiveSession

    shape = read_volume(image).shape
    big = int(0.8 * np.prod(shape))
    monkeypatch.setattr(InteractiveSession, "voxel_count", lambda self, *a, **k: big)
    out = tmp_path / "mask.nii.gz"
    argv = ["segment", str(image), "-p", "15", "14", "8", "--checkpoint", str(ckpt)]
    assert main([*argv, "-o", str(out), "--no-extend"]) == 0
    err = capsys.readouterr().err
    assert "warning: the mask covers 80% of the image" in err and "negative click" in err


def test_extent_needs_a_model_with_several_masks(tmp_path, image, ckpt, capsys):
    argv = ["segment", str(image), "-p", "15", "14", "8", "--checkpoint", str(ckpt)]
    assert main([*argv, "-o", str(tmp_path / "a.nii.gz")]) == 0
    assert "masks this click could get" not in capsys.readouterr().out  # one mask per click
    assert main([*argv, "-o", str(tmp_path / "b.nii.gz"), "--extent", "1"]) == 2
    assert "decodes one mask per click" in _err(capsys)
    with pytest.raises(SystemExit):
        main([*argv, "-o", str(tmp_path / "c.nii.gz"), "--extent", "-1"])
    assert "--extent: must be a whole number >= 0, got '-1'" in capsys.readouterr().err


def test_extent_takes_another_first_mask_with_the_bundled_model(tmp_path, capsys):
    """The bundled model offers several masks at a first click: segment lists them after the
    first click and --extent N writes mask N (smallest first), refined by later clicks.

    Boundary refinement is off here: it makes all of a clean ball's masks the ball (one mask
    is listed then; see test_refined_extents_of_a_ball_are_one)."""
    grid = np.indices((64, 64, 64)).transpose(1, 2, 3, 0)
    ball = np.linalg.norm(grid - 32.0, axis=-1) <= 8
    rng = np.random.default_rng(0)
    img = np.where(ball, 400.0, 100.0) + rng.normal(0, 20, ball.shape)
    path = write_volume(Volume(img.astype(np.float32), (1.0, 1.0, 1.0)), tmp_path / "ball.nii.gz")
    argv = ["segment", str(path), "-p", "32", "32", "32", "--checkpoint", "default"]
    argv += ["--refine-boundary", "0"]
    assert main([*argv, "-o", str(tmp_path / "auto.nii.gz")]) == 0
    lines = capsys.readouterr().out.splitlines()
    # the rules in effect are printed once, the command line's override included
    rules = [ln for ln in lines if ln.startswith("inference rules: ")]
    assert len(rules) == 1 and "boundary refinement off" in rules[0]
    assert "zoom-in 1 mm" in rules[0]
    listed = [ln for ln in lines if "could get" in ln]
    # each mask with its size (ml, or voxels when under 0.05 ml) and the spacing of the
    # lattice it was predicted on (1.5 mm, or zoomed)
    entries = re.findall(r"\d+: [\d.]+ (?:ml|voxels?) at (?:1\.5|1|0\.5) mm", listed[0])
    assert len(listed) == 1 and len(entries) >= 2
    assert len(entries) == len(re.findall(r"\d+: ", listed[0]))
    # the pick is marked once: the model's, or the edge pick's when it took another mask,
    # which then also marks the model's own (the one its note names)
    assert listed[0].count("(model)") == 1 and listed[0].count("(edge pick)") <= 1
    if "(edge pick)" in listed[0]:
        assert "(model)" not in re.search(r"\d+: [^:]*\(edge pick\)", listed[0])[0]
    last = len(entries) - 1
    counts = {}
    for n in (0, last):
        out = tmp_path / f"extent{n}.nii.gz"
        assert main([*argv, "-o", str(out), "--extent", str(n)]) == 0
        took = re.search(rf"took mask {n}: \d+ voxels, (.*)$", capsys.readouterr().out, re.M)
        assert took and re.fullmatch(r"1 ROI at [\d.]+ mm \(zoom-in\)|\d+ ROI\(s\)", took[1])
        counts[n] = int(read_volume(out).array.sum())
    assert 0 < counts[0] < counts[last]
    # a later click refines the chosen mask (the list is only printed after the first click)
    out = tmp_path / "refined.nii.gz"
    assert main([*argv, "-n", "60", "60", "60", "-o", str(out), "--extent", str(last)]) == 0
    assert capsys.readouterr().out.count("could get") == 1


def test_refined_extents_of_a_ball_are_one(tmp_path, capsys):
    """With the bundled model's boundary refinement, the masks a click in a clean ball could
    get all become the ball: one mask is listed, and it is the ball."""
    grid = np.indices((64, 64, 64)).transpose(1, 2, 3, 0)
    ball = np.linalg.norm(grid - 32.0, axis=-1) <= 8
    rng = np.random.default_rng(0)
    img = np.where(ball, 400.0, 100.0) + rng.normal(0, 20, ball.shape)
    path = write_volume(Volume(img.astype(np.float32), (1.0, 1.0, 1.0)), tmp_path / "ball.nii.gz")
    out = tmp_path / "m.nii.gz"
    argv = ["segment", str(path), "-p", "32", "32", "32", "--checkpoint", "default", "-o", str(out)]
    assert main(argv) == 0
    listed = [ln for ln in capsys.readouterr().out.splitlines() if "could get" in ln]
    assert len(listed) == 1 and listed[0].count(" ml") == 1 and "(model)" in listed[0]
    mask = read_volume(out).array > 0
    assert 2 * (mask & ball).sum() / (mask.sum() + ball.sum()) > 0.95


@pytest.mark.parametrize("command", ["segment", "predict", "serve"])
def test_an_unknown_modality_is_a_usage_error_naming_the_flag(command, capsys):
    """A typo such as CTT would silently skip the CT clamp: every --modality takes the known
    modalities (or names of them) only."""
    with pytest.raises(SystemExit) as stop:
        main([command, "in.nii.gz", "--modality", "CTT"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "argument --modality: modality 'CTT' is not one of CT, MR, PET, SPECT, US, XR" in err
    assert "Traceback" not in err


def test_modality_names_are_taken_in_canonical_form():
    from sammed3d.cli import modality_arg

    assert [modality_arg(v) for v in ("ct", "T1", "mri", "FLAIR", "pet")] == [
        "CT",
        "MR",
        "MR",
        "MR",
        "PET",
    ]


def test_an_extent_beyond_the_list_names_the_flag(tmp_path, capsys):
    grid = np.indices((64, 64, 64)).transpose(1, 2, 3, 0)
    ball = np.linalg.norm(grid - 32.0, axis=-1) <= 8
    img = np.where(ball, 400.0, 100.0) + np.random.default_rng(0).normal(0, 20, ball.shape)
    path = write_volume(Volume(img.astype(np.float32), (1.0, 1.0, 1.0)), tmp_path / "ball.nii.gz")
    argv = ["segment", str(path), "-p", "32", "32", "32", "--checkpoint", "default"]
    out = tmp_path / "m.nii.gz"
    # within what the model can list (3 outputs x the main and the zoom lattice) but beyond
    # what this click lists: refused after the model ran, naming the listed masks
    assert main([*argv, "-o", str(out), "--extent", "5"]) == 2
    expected = r"--extent must be in 0\.\.\d \(the masks listed above\), got 5"
    assert re.search(expected, _err(capsys))
    assert not out.exists()
    # beyond what the model can ever list: refused before the image is read or encoded
    assert main([*argv, "-o", str(out), "--extent", "6"]) == 2
    captured = capsys.readouterr()
    assert (
        "--extent must be in 0..5 for this model (its first click lists at most 6 masks), "
        "got 6" in captured.err
    )
    assert "loaded" in captured.out and "read " not in captured.out
    assert not out.exists()


def test_the_masks_list_says_tiny_masks_in_voxels_and_a_replaced_pick_as_taken(tmp_path, capsys):
    """A CT-like liver with a hypodense lesion (a fresh-user trial's case): the edge pick
    replaces the model's lesion-sized mask by the liver. The list shows a 2-voxel mask as
    voxels (not "0.0 ml"), and the model's own mask with the size it had as the object's
    mask, not "more when taken" (it had been grown already)."""
    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(np.arange(160.0), np.arange(160.0), np.arange(60) * 2.5, indexing="ij")
    ct = np.full(x.shape, -1000.0)
    ct[(x - 80) ** 2 + (y - 80) ** 2 <= 70**2] = 0.0
    ct[((x - 60) / 25) ** 2 + ((y - 70) / 20) ** 2 + ((z - 75) / 30) ** 2 <= 1] = 60.0
    ct[(x - 60) ** 2 + (y - 70) ** 2 + (z - 75) ** 2 <= 36] = -20.0
    ct += rng.normal(0, 15, ct.shape)
    path = write_volume(Volume(ct.astype(np.float32), (1.0, 1.0, 2.5)), tmp_path / "ct.nii.gz")
    argv = ["segment", str(path), "--modality", "CT", "-p", "60", "70", "30"]
    assert main([*argv, "--checkpoint", "default", "-o", str(tmp_path / "m.nii.gz")]) == 0
    out = capsys.readouterr().out
    listed = next(ln for ln in out.splitlines() if "could get" in ln)
    assert " 0.0 ml" not in listed
    assert "more when taken" not in listed  # every mask here was grown or reaches no face
    if "(edge pick)" in listed:
        own = re.search(r"\d+: ([\d.]+ ml) at [\d.]+ mm \(model\)", listed)
        note = re.search(r"the model's mask \((\d+) voxels", out)
        assert own and note
        ml = int(note[1]) * 2.5 / 1000
        assert own[1] == f"{ml:.1f} ml"
        # and how to take it (2026-12-03 trial: a 4 ml lesion shown as the 2.4 l body)
        index = re.search(r"(\d+): [\d.]+ ml at [\d.]+ mm \(model\)", listed)[1]
        assert (
            f"  not the structure you clicked? --extent {index} takes the model's own mask "
            "(--first-pick model: the model's pick for every first click)" in out
        )
    else:
        assert "not the structure you clicked?" not in out


def test_a_click_on_the_voxel_of_an_earlier_click_of_the_other_sign_is_noted(
    tmp_path, image, ckpt, capsys
):
    """The model gets both clicks (as the API and the server give them); segment says they
    contradict and where the voxel ended (8.4 rounds to 8: the same voxel)."""
    argv = ["segment", str(image), "-p", "15", "14", "8", "-n", "15", "14", "8.4"]
    assert main([*argv, "--checkpoint", str(ckpt), "-o", str(tmp_path / "m.nii.gz")]) == 0
    lines = capsys.readouterr().out.splitlines()
    notes = [ln for ln in lines if "contradict" in ln]
    assert len(notes) == 1 and lines[lines.index(notes[0]) - 1].startswith("click 2/2 - at")
    inside = bool(read_volume(tmp_path / "m.nii.gz").array[15, 14, 8])
    assert notes[0] == (
        "  note: this click is on the voxel of click 1, which was positive: the two "
        f"contradict; the voxel is {'in' if inside else 'out of'} the mask now"
    )


def test_a_later_click_that_leaves_a_tenth_of_the_mask_is_noted():
    """A trial's negative click took a lesion from 4,110 voxels to 2 without a word."""
    from sammed3d.cli.segment import shrink_note

    assert shrink_note(4110, 2, positive=False) == (
        "  note: this negative click left 2 of the mask's 4110 voxels (100.0% fewer): if the "
        "mask was right before it, leave this click out or place it elsewhere"
    )
    assert shrink_note(1000, 99, positive=True).startswith(
        "  note: this positive click left 99 of the mask's 1000 voxels (90.1% fewer)"
    )
    assert shrink_note(1000, 100, positive=False) == ""  # a tenth is left: no note
    assert shrink_note(0, 0, positive=True) == ""  # nothing before (an empty first mask)
    assert shrink_note(10, 5000, positive=True) == ""  # growth is not noted


def test_a_click_the_mask_does_not_follow_is_noted():
    """A trial's negative click beside a lesion left its own voxel inside the mask (334 ->
    416 voxels) without a word."""
    from sammed3d.cli.segment import unfollowed_note

    assert unfollowed_note(positive=False, inside=True) == (
        "  note: the voxel of this negative click is in the mask: the model did not follow it "
        "(leave it out, or click where the mask is clearly wrong)"
    )
    assert unfollowed_note(positive=True, inside=False).startswith(
        "  note: the voxel of this positive click is out of the mask"
    )
    assert unfollowed_note(positive=True, inside=True) == ""
    assert unfollowed_note(positive=False, inside=False) == ""


def test_an_image_in_hounsfield_units_without_a_modality_gets_a_hint():
    """A trial's int16 CT (air at -1000) was read as 'not CT' with no word about its values."""
    from sammed3d.cli.segment import _not_ct_line

    plain = "modality: not CT (no clamp; the file does not say: --modality CT for a CT)"
    ct = np.full((4, 4, 4), 40, np.int16)
    ct[0] = -1024
    assert _not_ct_line(ct) == (
        f"{plain}; its darkest voxel is -1024, like air in Hounsfield units: if it is a CT, "
        "--modality CT clamps it to [-1000, 1000] as in training"
    )
    assert _not_ct_line(np.linspace(0, 900, 64).reshape(4, 4, 4)) == plain  # an MR
    assert _not_ct_line(np.full((4, 4, 4), -899.0)) == plain
