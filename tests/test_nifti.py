"""NIfTI spatial units (``xyzt_units``): geometry, world clicks and written masks are in mm.

nibabel's ``affine`` is in the file's own unit; a header in metres read as mm made every voxel
1000x too small and every click given in mm fall far outside the image.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from sammed3d import save_checkpoint
from sammed3d.cli import main
from sammed3d.inference.geometry import nearest_index
from sammed3d.io import (
    LPS_TO_RAS,
    VolumeError,
    describe_world_extent,
    read_volume,
    world_extent,
    write_volume,
)
from sammed3d.nifti import nifti_spatial_unit

#: Voxel -> RAS mm of the test images: 1 x 1.5 x 2.5 mm voxels, a flip and an offset.
AFFINE_MM = np.array(
    [
        [-1.0, 0.0, 0.0, 20.0],
        [0.0, 1.5, 0.0, -30.5],
        [0.0, 0.0, 2.5, 12.25],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
SHAPE = (24, 20, 12)
#: unit -> lengths per mm
PER_MM = {"meter": 1e-3, "micron": 1e3, "mm": 1.0, "unknown": 1.0}


def _array() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = 100 + 20 * rng.random(SHAPE)
    img[8:16, 6:14, 3:9] += 400
    return img.astype(np.float32)


def _in_unit(affine_mm: np.ndarray, unit: str) -> np.ndarray:
    affine = affine_mm.copy()
    affine[:3, :] *= PER_MM[unit]
    return affine


def _nifti(
    path: Path,
    unit: str,
    *,
    form: str = "sform",
    image_class: type = nib.Nifti1Image,
    array: np.ndarray | None = None,
) -> Path:
    """The test image with its lengths in ``unit``, its geometry in ``form`` only."""
    affine = _in_unit(AFFINE_MM, unit)
    img = image_class(_array() if array is None else array, affine)
    img.header.set_xyzt_units(unit, "sec")
    img.set_sform(affine if form == "sform" else None, code=2 if form == "sform" else 0)
    img.set_qform(affine if form == "qform" else None, code=1 if form == "qform" else 0)
    nib.save(img, path)
    return path


@pytest.mark.parametrize("image_class", [nib.Nifti1Image, nib.Nifti2Image])
@pytest.mark.parametrize("form", ["sform", "qform", "pixdim"])
@pytest.mark.parametrize("unit", ["meter", "micron", "unknown"])
def test_a_nifti_in_any_unit_reads_as_the_same_file_in_mm(
    tmp_path: Path, unit: str, form: str, image_class: type
) -> None:
    """Spacing, origin and affine in mm, to the bit of the same file written in mm."""
    ref = read_volume(_nifti(tmp_path / "mm.nii.gz", "mm", form=form, image_class=image_class))
    path = _nifti(tmp_path / f"{unit}.nii", unit, form=form, image_class=image_class)
    volume = read_volume(path)
    assert volume.spacing == (1.0, 1.5, 2.5)
    assert volume.spacing == ref.spacing
    np.testing.assert_array_equal(volume.affine, ref.affine)
    if form != "pixdim":  # (nibabel's pixdim-only matrix centres the grid)
        np.testing.assert_allclose(volume.affine, AFFINE_MM, atol=1e-5)
    if image_class is nib.Nifti1Image and form != "pixdim":  # ITK converts the unit too
        itk = sitk.ReadImage(str(path))
        np.testing.assert_allclose(itk.GetSpacing(), volume.spacing, rtol=1e-6)
        np.testing.assert_allclose(itk.GetOrigin(), volume.origin, atol=1e-4)


def test_metres_with_a_0_001_voxel_size_read_as_1_mm(tmp_path: Path) -> None:
    img = nib.Nifti1Image(_array(), np.diag([0.001, 0.001, 0.001, 1.0]))
    img.header.set_xyzt_units("meter")
    nib.save(img, tmp_path / "m.nii.gz")
    volume = read_volume(tmp_path / "m.nii.gz")
    assert volume.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(volume.affine, np.eye(4))
    assert nib.load(tmp_path / "m.nii.gz").header.get_zooms() == pytest.approx((1e-3,) * 3)


@pytest.mark.parametrize(
    ("xyzt_units", "spatial", "per_mm"),
    [
        (1 | 8, 1, 1e-3),  # metres, seconds
        (1 | 64, 1, 1e-3),  # metres, a time code nibabel does not know (it raises KeyError)
        (3 | 24, 3, 1e3),  # micrometres, microseconds
        (2 | 16, 2, 1.0),
        (0, 0, 1.0),
    ],
)
def test_the_spatial_unit_is_the_low_three_bits(
    tmp_path: Path, xyzt_units: int, spatial: int, per_mm: float
) -> None:
    affine = AFFINE_MM.copy()
    affine[:3, :] *= per_mm
    img = nib.Nifti1Image(_array(), affine)
    img.header["xyzt_units"] = xyzt_units
    nib.save(img, tmp_path / "u.nii.gz")
    assert nifti_spatial_unit(nib.load(tmp_path / "u.nii.gz").header).code == spatial
    volume = read_volume(tmp_path / "u.nii.gz")
    np.testing.assert_allclose(volume.affine, AFFINE_MM, atol=1e-5)


def test_an_undefined_spatial_unit_reads_as_mm_with_a_warning(tmp_path, caplog) -> None:
    img = nib.Nifti1Image(_array(), AFFINE_MM)
    img.header["xyzt_units"] = 5
    nib.save(img, tmp_path / "u5.nii.gz")
    with caplog.at_level(logging.WARNING, logger="sammed3d.nifti"):
        volume = read_volume(tmp_path / "u5.nii.gz")
    np.testing.assert_allclose(volume.affine, AFFINE_MM, atol=1e-6)
    assert "undefined spatial unit (code 5" in caplog.text and "u5.nii.gz" in caplog.text


def test_an_implausible_size_after_conversion_names_the_unit(tmp_path: Path) -> None:
    """mm values under a metre code (a wrong writer) are 1000x too large: the error says why."""
    img = nib.Nifti1Image(_array(), AFFINE_MM)
    img.header.set_xyzt_units("meter")
    nib.save(img, tmp_path / "wrong.nii.gz")
    with pytest.raises(VolumeError) as info:
        read_volume(tmp_path / "wrong.nii.gz")
    text = str(info.value)
    assert "\n" not in text and "(1000, 1500, 2500) mm is outside the plausible range" in text
    assert "converted from m: the header's xyzt_units give code 1" in text
    assert text.endswith("; fix the header")


@pytest.mark.parametrize("unit", ["meter", "micron"])
def test_a_ras_click_in_mm_maps_to_its_voxel(tmp_path: Path, unit: str) -> None:
    """The map ``segment --coords ras`` uses, on a voxel boundary too (ties round up as in
    the same file written in mm: the conversion adds no rounding noise)."""
    volume = read_volume(_nifti(tmp_path / "u.nii.gz", unit))
    ref = read_volume(_nifti(tmp_path / "mm.nii.gz", "mm"))
    for ijk in ([5, 7, 3], [0, 0, 0], [23, 19, 11], [10.5, 7.5, 2.5]):
        ras = AFFINE_MM @ np.r_[ijk, 1.0]
        got = volume.physical_to_index(ras[:3] @ LPS_TO_RAS)
        np.testing.assert_allclose(got, ijk, atol=1e-5)
        want = nearest_index(ref.physical_to_index(ras[:3] @ LPS_TO_RAS))
        np.testing.assert_array_equal(nearest_index(got), want)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
@pytest.mark.parametrize("unit", ["meter", "micron"])
def test_a_mask_of_a_file_in_metres_overlays_it(tmp_path: Path, unit: str, suffix: str) -> None:
    """The mask keeps the input's unit and matrices: nibabel, ITK and sammed3d place it on
    the image (a mask in mm under a metre header, or the reverse, would not)."""
    src = _nifti(tmp_path / f"img{suffix}", unit)
    volume = read_volume(src)
    mask = (volume.array > 300).astype(np.uint8)
    out = write_volume(volume.with_array(mask), tmp_path / f"mask{suffix}")
    img_n, mask_n = nib.load(src), nib.load(out)
    assert mask_n.header.get_xyzt_units()[0] == unit
    np.testing.assert_array_equal(mask_n.affine, img_n.affine)  # nibabel: the file's unit
    np.testing.assert_array_equal(mask_n.header.get_zooms(), img_n.header.get_zooms())
    img_i, mask_i = sitk.ReadImage(str(src)), sitk.ReadImage(str(out))  # ITK: mm
    assert mask_i.GetSpacing() == img_i.GetSpacing()
    assert mask_i.GetOrigin() == img_i.GetOrigin()
    assert mask_i.GetDirection() == img_i.GetDirection()
    np.testing.assert_allclose(mask_i.GetSpacing(), (1.0, 1.5, 2.5), rtol=1e-6)
    back = read_volume(out)
    np.testing.assert_array_equal(back.affine, volume.affine)
    np.testing.assert_array_equal(back.array, mask)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_a_mask_of_a_file_in_metres_in_another_format_is_in_mm(tmp_path, suffix) -> None:
    src = _nifti(tmp_path / "img.nii.gz", "meter")
    volume = read_volume(src)
    out = write_volume(volume.with_array(volume.array > 300), tmp_path / f"mask{suffix}")
    np.testing.assert_allclose(read_volume(out).affine, volume.affine, atol=1e-6)
    img_i, mask_i = sitk.ReadImage(str(src)), sitk.ReadImage(str(out))
    np.testing.assert_allclose(mask_i.GetSpacing(), img_i.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(mask_i.GetOrigin(), img_i.GetOrigin(), atol=1e-4)


def test_the_world_extent_is_in_mm(tmp_path: Path) -> None:
    volume = read_volume(_nifti(tmp_path / "m.nii.gz", "meter"))
    box = world_extent(volume, volume.shape)
    # x: voxel i at 20 - i mm (i = 0..23, outer faces half a voxel beyond), y and z likewise
    np.testing.assert_allclose(box, [(-3.5, 20.5), (-31.25, -1.25), (11.0, 41.0)], atol=1e-5)
    lps = world_extent(volume, volume.shape, space="lps")
    np.testing.assert_allclose(lps, [(-20.5, 3.5), (1.25, 31.25), (11.0, 41.0)], atol=1e-5)
    text = describe_world_extent(volume, volume.shape)
    assert text == "x -3.5 to 20.5, y -31.2 to -1.2, z 11.0 to 41.0 mm (RAS)"
    with pytest.raises(ValueError, match="space must be"):
        world_extent(volume, volume.shape, space="xyz")


@pytest.fixture()
def ckpt(tmp_path: Path, tiny_model: torch.nn.Module) -> Path:
    return save_checkpoint(tiny_model, tmp_path / "tiny.pth")


@pytest.mark.parametrize("unit", ["meter", "micron"])
def test_segment_coords_ras_on_a_file_in_metres(tmp_path, ckpt, capsys, unit: str) -> None:
    """The user's case: ``segment --coords ras`` in mm on a NIfTI in metres clicks the voxel
    at those millimetres (it clicked voxel (0, 0, 0)), and the same as on the file in mm."""
    masks = {}
    for name in ("mm", unit):
        image = _nifti(tmp_path / f"{name}.nii.gz", name)
        ras = AFFINE_MM @ np.array([11.0, 9.0, 5.0, 1.0])
        out = tmp_path / f"mask_{name}.nii.gz"
        argv = ["segment", str(image), "--coords", "ras", "-p", *map(str, ras[:3])]
        argv += ["--checkpoint", str(ckpt), "-o", str(out), "--no-extend"]
        assert main(argv) == 0
        printed = capsys.readouterr().out
        assert "spacing (1.0, 1.5, 2.5) mm" in printed
        assert "click 1/1 + at (11, 9, 5)" in printed
        masks[name] = read_volume(out)
        assert nib.load(out).header.get_xyzt_units()[0] == name
        np.testing.assert_array_equal(nib.load(out).affine, nib.load(image).affine)
    np.testing.assert_array_equal(masks[unit].array, masks["mm"].array)
    np.testing.assert_array_equal(masks[unit].affine, masks["mm"].affine)


def test_segment_a_ras_click_outside_a_file_in_metres_is_an_error(tmp_path, ckpt, capsys):
    """Never a silent clamp: a click beyond the image (in mm) is a one-line error, no output."""
    image = _nifti(tmp_path / "m.nii.gz", "meter")
    out = tmp_path / "mask.nii.gz"
    argv = ["segment", str(image), "--coords", "ras", "-p", "20", "-15", "90"]
    assert main([*argv, "--checkpoint", str(ckpt), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert "outside the image" in err and "RAS (20, -15, 90) mm" in err
    assert not out.exists()
