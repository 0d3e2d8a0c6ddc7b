"""The 4-step cleaning rules and the integrity check on synthetic arrays with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from sammed3d.data.cleaning import (
    CleaningConfig,
    check_integrity,
    clean_mask,
    connected_components,
    mask_stats,
    normalise_class_name,
    paired_base,
)
from sammed3d.io import Volume

LPS_IDENTITY = np.eye(3)  # ITK direction: +i -> patient left (LPS x)
RAS_ORIENTED = np.diag([-1.0, -1.0, 1.0])  # ITK direction of a RAS-stored file: +i -> right


def _affine(spacing: tuple[float, float, float] = (1.0, 1.0, 1.0), direction=LPS_IDENTITY):
    return Volume(np.zeros((2, 2, 2)), spacing, (0.0, 0.0, 0.0), direction).affine


def _box(shape, lo, hi) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return m


def test_step1_drops_half_cubic_centimetre() -> None:
    # 8 x 8 x 8 voxels of 1 mm = 0.512 cm³ < 1 cm³
    small = _box((24, 24, 24), (10, 10, 10), (18, 18, 18))
    [res] = clean_mask(small, _affine(), "Liver")
    assert (res.kept, res.rule, res.class_name) == (False, "min_volume", "liver")
    assert res.stats.voxels == 512
    assert res.stats.volume_mm3 == pytest.approx(512.0)
    assert res.mask is None
    # The same voxels at 1.5 mm are 1.73 cm³ and 12 mm wide: now the extent rule fires.
    [res] = clean_mask(small, _affine((1.5, 1.5, 1.5)), "Liver")
    assert res.rule == "min_extent"
    # and at 2 mm it is 4.1 cm³, 16 mm per side: kept.
    [res] = clean_mask(small, _affine((2.0, 2.0, 2.0)), "Liver")
    assert res.kept and res.rule is None
    assert res.stats.bbox_mm == (16.0, 16.0, 16.0)
    assert res.stats.bbox_voxels == ((10, 10, 10), (18, 18, 18))


def test_step1_extent_uses_physical_spacing() -> None:
    flat = _box((48, 48, 48), (5, 5, 20), (45, 45, 30))  # 40 x 40 x 10 voxels
    [res] = clean_mask(flat, _affine((1.0, 1.0, 1.0)), "x")
    assert res.rule == "min_extent" and "< 15 mm" in res.message
    [res] = clean_mask(flat, _affine((1.0, 1.0, 2.0)), "x")
    assert res.kept
    [res] = clean_mask(np.zeros((8, 8, 8), bool), _affine(), "x")
    assert res.rule == "empty"


def test_step2_background_share() -> None:
    cube = _box((100, 100, 100), (40, 40, 40), (60, 60, 60))  # 0.8 % foreground
    [res] = clean_mask(cube, _affine(), "x")
    assert res.rule == "max_background"
    assert res.stats.background_fraction == pytest.approx(0.992)
    assert clean_mask(cube, _affine(), "x", CleaningConfig(max_background_fraction=1.0))[0].kept
    # Measured in a 32³ training crop around the mask instead: 24 % foreground, kept.
    assert clean_mask(cube, _affine(), "x", CleaningConfig(background_crop=32))[0].kept
    assert clean_mask(cube[20:80, 20:80, 20:80], _affine(), "x")[0].kept


def test_step3_seven_components_keep_five_largest() -> None:
    shape = (64, 64, 64)
    mask = np.zeros(shape, bool)
    sides = [8, 9, 10, 11, 12, 13, 14]  # 7 cubes, all > 1 cm³ and > 15 mm at 2 mm spacing
    corners = [(1, 1, 1), (1, 30, 1), (1, 1, 30), (30, 1, 1), (30, 30, 1), (30, 1, 30), (1, 30, 30)]
    for side, c in zip(sides, corners, strict=True):
        mask |= _box(shape, c, tuple(x + side for x in c))
    labels, sizes, _ = connected_components(mask)
    assert sizes.tolist() == [s**3 for s in sorted(sides, reverse=True)]
    assert labels.max() == 7

    [res] = clean_mask(mask, _affine((2.0, 2.0, 2.0)), "Liver")
    assert res.kept
    assert (res.components, res.components_removed) == (7, 2)
    assert res.voxels_removed == 8**3 + 9**3
    assert res.stats.voxels == sum(s**3 for s in sides[2:])
    assert not res.mask[corners[0]] and not res.mask[corners[1]]  # the two smallest are gone
    assert all(res.mask[c] for c in corners[2:])
    assert connected_components(res.mask)[1].size == 5

    [res] = clean_mask(mask, _affine((2.0, 2.0, 2.0)), "x", CleaningConfig(max_components=0))
    assert res.components_removed == 0 and res.stats.voxels == mask.sum()


@pytest.mark.parametrize(
    ("direction", "high_i_side"), [(LPS_IDENTITY, "left"), (RAS_ORIENTED, "right")]
)
def test_step4_symmetry_split_in_patient_coordinates(direction, high_i_side) -> None:
    shape = (64, 40, 40)
    low_i = _box(shape, (4, 10, 10), (20, 30, 30))  # bigger blob at low i
    high_i = _box(shape, (48, 12, 12), (60, 28, 28))
    results = clean_mask(low_i | high_i, _affine((1.5, 1.5, 1.5), direction), "Kidneys")
    assert [r.class_name for r in results] == ["kidney_left", "kidney_right"]
    assert all(r.kept for r in results)
    by_side = {r.side: r for r in results}
    other = "left" if high_i_side == "right" else "right"
    assert np.array_equal(by_side[high_i_side].mask, high_i)
    assert np.array_equal(by_side[other].mask, low_i)
    assert all(r.source_class == "Kidneys" for r in results)


def test_step4_explicit_midline_and_missing_side() -> None:
    shape = (64, 40, 40)
    blob = _box(shape, (40, 10, 10), (56, 30, 30))
    affine = _affine((1.5, 1.5, 1.5), RAS_ORIENTED)  # RAS x = -(-1.5 i) ... grows with i
    x_of_blob = (affine @ np.array([48, 20, 20, 1.0]))[0]
    # Midline to the blob's left (smaller RAS x): the blob is on the patient's right.
    res = clean_mask(blob, affine, "lung", midline_x=x_of_blob - 10)
    assert [(r.class_name, r.kept, r.rule) for r in res] == [
        ("lung_left", False, "empty"),
        ("lung_right", True, None),
    ]
    res = clean_mask(blob, affine, "lung", midline_x=x_of_blob + 10)
    assert [(r.class_name, r.kept) for r in res] == [("lung_left", True), ("lung_right", False)]


def test_step4_only_for_paired_names() -> None:
    shape = (64, 40, 40)
    two = _box(shape, (4, 10, 10), (20, 30, 30)) | _box(shape, (44, 10, 10), (60, 30, 30))
    assert [r.class_name for r in clean_mask(two, _affine((1.5,) * 3), "kidney_left")] == [
        "kidney_left"
    ]
    assert len(clean_mask(two, _affine((1.5,) * 3), "Liver")) == 1
    off = CleaningConfig(split_paired=False)
    assert len(clean_mask(two, _affine((1.5,) * 3), "kidney", off)) == 1
    custom = CleaningConfig(paired_classes=("Liver",))
    assert [r.class_name for r in clean_mask(two, _affine((1.5,) * 3), "liver", custom)] == [
        "liver_left",
        "liver_right",
    ]
    # A too-small side is dropped by step 1 again, the other side is kept.
    lopsided = _box(shape, (4, 10, 10), (20, 30, 30)) | _box(shape, (55, 10, 10), (58, 13, 13))
    res = clean_mask(lopsided, _affine((1.5,) * 3), "kidney", CleaningConfig(max_components=5))
    assert sorted((r.kept, r.rule) for r in res) == [(False, "min_volume"), (True, None)]


def test_names_and_config() -> None:
    assert normalise_class_name("Liver") == normalise_class_name(" liver ") == "liver"
    assert normalise_class_name("Adrenal Gland") == "adrenal_gland"
    assert normalise_class_name("adrenal-gland") == "adrenal_gland"
    assert paired_base("Lungs") == "lung"
    assert paired_base("lung_upper_lobe_left") is None
    with pytest.raises(ValueError, match="no letters"):
        normalise_class_name("--")
    with pytest.raises(ValueError, match="max_background_fraction"):
        CleaningConfig(max_background_fraction=1.5)
    with pytest.raises(ValueError, match="connectivity"):
        CleaningConfig(connectivity=8)
    with pytest.raises(ValueError, match="3-D"):
        clean_mask(np.zeros((4, 4)), _affine(), "x")
    with pytest.raises(ValueError, match="3-D mask"):
        mask_stats(np.zeros((4, 4, 4)), (1.0, 1.0))


def test_integrity_check() -> None:
    arr = np.zeros((20, 20, 20), np.float32)
    lab = np.zeros((20, 20, 20), np.uint8)
    lab[5:10, 5:10, 5:10] = 2
    image = Volume(arr, (1.0, 1.0, 2.0), (1.0, 2.0, 3.0))
    good = Volume(lab, (1.0, 1.0, 2.0), (1.0, 2.0, 3.0))
    assert check_integrity(image, good, [1, 2]) == []

    rules = {p.rule for p in check_integrity(image, good, [1])}
    assert rules == {"integrity:unexpected_labels"}

    moved = Volume(lab, (1.0, 1.0, 2.0), (1.0, 2.0, 13.0))
    [problem] = check_integrity(image, moved, [2])
    assert problem.rule == "integrity:origin" and "13" in problem.message
    # the origin is ITK's (LPS), which nibabel prints with x and y negated: say so
    said = "(1, 2, 13) (mm, LPS: ITK's axes; nibabel shows x and y negated)"
    assert problem.message.endswith(said)

    cropped = Volume(lab[:, :, :18], (1.0, 1.0, 1.0), (1.0, 2.0, 3.0), RAS_ORIENTED)
    rules = {p.rule for p in check_integrity(image, cropped, [2])}
    assert rules == {"integrity:shape", "integrity:spacing", "integrity:direction"}

    nan = arr.copy()
    nan[0, 0, 0] = np.nan
    rules = [p.rule for p in check_integrity(image.with_array(nan), good, [2])]
    assert rules == ["integrity:nan_image"]

    prob = good.with_array(lab.astype(np.float32) * 0.4)
    assert [p.rule for p in check_integrity(image, prob, [1, 2])] == ["integrity:label_values"]
