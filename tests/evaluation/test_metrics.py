"""Metrics: hand-computed cases, anisotropic spacing, the empty-mask policy, the accumulator."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from sammed3d.evaluation.metrics import (
    MetricAccumulator,
    compute_metrics,
    dice,
    hd95,
    iou,
    json_safe,
    nsd,
    summarize,
    surface_distances,
)


def _box(shape: tuple[int, int, int], lo: tuple[int, ...], hi: tuple[int, ...]) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return m


def test_dice_iou_hand_computed() -> None:
    gt = _box((10, 10, 10), (0, 0, 0), (4, 5, 5))  # 100 voxels
    pred = _box((10, 10, 10), (2, 0, 0), (6, 5, 5))  # 100 voxels, 50 shared
    assert dice(pred, gt) == pytest.approx(2 * 50 / 200)
    assert iou(pred, gt) == pytest.approx(50 / 150)
    assert dice(gt, gt) == 1.0 and iou(gt, gt) == 1.0
    # integer label maps and tensors: non-zero = foreground
    assert dice(torch.from_numpy(pred.astype(np.uint8) * 3), gt.astype(np.int32)) == 0.5


def test_empty_policy() -> None:
    empty = np.zeros((8, 8, 8), bool)
    obj = _box((8, 8, 8), (2, 2, 2), (5, 5, 5))
    both = compute_metrics(empty, empty, (1, 1, 1))
    assert all(math.isnan(v) for v in both.values())
    for pred, gt in ((obj, empty), (empty, obj)):
        m = compute_metrics(pred, gt, (1, 1, 1))
        assert m["dice"] == 0 and m["iou"] == 0 and m["nsd"] == 0
        assert m["hd95"] == math.inf


def test_nsd_identical_and_far_apart() -> None:
    gt = _box((30, 30, 30), (3, 4, 5), (10, 12, 11))
    assert nsd(gt, gt, (0.7, 1.3, 2.0), 0.0) == pytest.approx(1.0)
    far = _box((30, 30, 30), (20, 20, 20), (27, 28, 26))
    assert nsd(far, gt, (1, 1, 1), 1.0) == 0.0


def test_nsd_extra_copy_is_two_thirds() -> None:
    # pred = gt plus a congruent copy far away: 2 of the 3 equal-area surfaces are correct,
    # whatever the surface-element weighting
    gt = _box((40, 40, 40), (4, 4, 4), (12, 14, 11))
    pred = gt | _box((40, 40, 40), (25, 24, 26), (33, 34, 33))
    assert nsd(pred, gt, (1.0, 0.8, 2.0), 1.0) == pytest.approx(2 / 3)


def test_nsd_tolerance_uses_physical_spacing_per_axis() -> None:
    gt = _box((24, 24, 24), (5, 5, 5), (15, 15, 15))
    pred = np.roll(gt, 1, axis=0)  # shifted one voxel along axis 0
    # axis 0 is 2 mm: a 1 mm tolerance misses the shifted faces, 2 mm covers all of them
    assert nsd(pred, gt, (2.0, 1.0, 1.0), 1.0) < 0.9
    assert nsd(pred, gt, (2.0, 1.0, 1.0), 2.0) == pytest.approx(1.0)
    # same shift along a 0.5 mm axis is within 1 mm
    assert nsd(pred, gt, (0.5, 1.0, 1.0), 1.0) == pytest.approx(1.0)
    # axis order matters: the 2 mm must apply to axis 0, not axis 2
    assert nsd(pred, gt, (1.0, 1.0, 2.0), 1.0) == pytest.approx(1.0)


def test_nsd_matches_monai_subvoxel_reference() -> None:
    from monai.metrics import compute_surface_dice
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    for _ in range(2):
        gt = gaussian_filter(rng.random((22, 26, 18)), 2.5) > 0.5
        pred = gaussian_filter(rng.random((22, 26, 18)), 2.5) > 0.5
        spacing = tuple(rng.uniform(0.5, 3.0, 3))
        onehot = [torch.from_numpy(np.stack([~m, m])[None]).float() for m in (pred, gt)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = compute_surface_dice(*onehot, [1.5], spacing=spacing, use_subvoxels=True)
        assert nsd(pred, gt, spacing, 1.5) == pytest.approx(float(ref), abs=1e-5)


def test_kdtree_and_distance_transform_agree() -> None:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(3)
    noisy = gaussian_filter(rng.random((30, 28, 20)), 1.0) > 0.5  # huge surface: "auto" -> edt
    gt = _box((30, 28, 20), (5, 6, 4), (22, 20, 15))
    spacing = (0.9, 1.4, 2.2)
    auto = surface_distances(noisy, gt, spacing)
    for method in ("kdtree", "edt"):
        other = surface_distances(noisy, gt, spacing, method=method)  # type: ignore[arg-type]
        np.testing.assert_allclose(other.pred_to_gt, auto.pred_to_gt, atol=1e-9)
        np.testing.assert_allclose(other.gt_to_pred, auto.gt_to_pred, atol=1e-9)
    assert np.isinf(surface_distances(gt, np.zeros_like(gt), method="edt").pred_to_gt).all()


def test_hd95_hand_computed() -> None:
    a = np.zeros((12, 12, 12), bool)
    b = np.zeros_like(a)
    a[2, 3, 4] = True
    b[5, 3, 8] = True
    # single voxels: the distance between their centres, (3 * 2 mm, 0, 4 * 0.5 mm)
    assert hd95(a, b, (2.0, 1.0, 0.5)) == pytest.approx(math.sqrt(36 + 4))
    # a shifted box: every surface element moves by exactly the shift
    gt = _box((24, 24, 24), (5, 5, 5), (15, 15, 15))
    assert hd95(np.roll(gt, 3, axis=2), gt, (1.0, 1.0, 0.8)) == pytest.approx(2.4)
    assert hd95(gt, gt, (1.0, 1.0, 1.0)) == 0.0


def test_hd95_ignores_small_outliers_but_max_does_not() -> None:
    gt = _box((40, 40, 40), (5, 5, 5), (20, 20, 20))
    pred = gt.copy()
    pred[35, 35, 35] = True  # one far voxel: < 5 % of the surface
    assert hd95(pred, gt, (1, 1, 1)) == pytest.approx(0.0)
    sd = surface_distances(pred, gt, (1, 1, 1))
    assert sd.pred_to_gt.max() > 20


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="same shape"):
        dice(np.zeros((3, 3, 3)), np.zeros((3, 3, 4)))
    with pytest.raises(ValueError, match="spacing"):
        nsd(np.ones((3, 3, 3)), np.ones((3, 3, 3)), (1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="tolerance"):
        nsd(np.ones((3, 3, 3)), np.ones((3, 3, 3)), None, -1.0)
    with pytest.raises(ValueError, match="unknown metric"):
        compute_metrics(np.ones((3, 3, 3)), np.ones((3, 3, 3)), metrics=["dsc"])


def test_accumulator_excludes_and_counts_nan_inf() -> None:
    acc = MetricAccumulator()
    acc.add("liver", {"dice": 0.8, "hd95": 3.0})
    acc.add("liver", {"dice": 0.6, "hd95": math.inf})
    acc.add("liver", {"dice": math.nan, "hd95": math.nan})
    other = MetricAccumulator()
    other.add("liver", {"dice": 1.0, "hd95": 5.0})
    other.add("kidney", {"dice": 0.5, "hd95": 1.0})
    acc.merge(other)
    s = acc.summary()
    assert s["liver"]["dice"] == {
        "mean": pytest.approx(0.8),
        "std": pytest.approx(np.std([0.8, 0.6, 1.0])),
        "n": 3,
        "n_nan": 1,
        "n_inf": 0,
    }
    assert s["liver"]["hd95"]["mean"] == pytest.approx(4.0)
    assert s["liver"]["hd95"]["n_inf"] == 1
    assert s["kidney"]["dice"]["n"] == 1
    acc.all_gather()  # no process group: a no-op
    assert acc.values("liver", "dice")[:2] == [0.8, 0.6]
    assert summarize([math.nan])["mean"] is None
    text = json.dumps(json_safe({"a": math.nan, "b": [math.inf, 1.0], "c": np.float32(2)}))
    assert json.loads(text) == {"a": None, "b": [None, 1.0], "c": 2.0}


def test_the_demo_mri_is_not_a_label_map_but_its_atlas_is() -> None:
    """The bundled T1 (uint8, ~250 integer values) was scored as a ground truth with 248
    "labels"; its neighbouring voxels mostly differ, the atlas's mostly agree."""
    from importlib import resources

    from sammed3d.evaluation.metrics import (
        check_label_map,
        equal_neighbour_fraction,
        label_map_metrics,
    )
    from sammed3d.io import VolumeError, read_volume

    demo = resources.files("sammed3d") / "assets" / "demo"
    t1 = read_volume(str(demo / "colin27_t1.nii.gz"))
    atlas = read_volume(str(demo / "colin27_structures.nii.gz"))
    assert equal_neighbour_fraction(t1.array) < 0.25 < 0.5 < equal_neighbour_fraction(atlas.array)
    with pytest.raises(VolumeError, match=r"^the ground truth \(.*colin27_t1.*intensity image"):
        label_map_metrics(atlas, t1, metrics=("dice",))
    assert check_label_map(atlas, "atlas").tolist() == [1, 2, 3]
    assert check_label_map(t1, "t1", max_labels=None).size > 200  # explicit labels: accepted
    assert equal_neighbour_fraction(np.zeros((3, 3, 3))) == 1.0


def test_check_same_grid_names_the_axes_of_an_origin() -> None:
    """Origins are ITK's (LPS); nibabel prints them with x and y negated: the message says so."""
    from sammed3d.evaluation.metrics import check_same_grid
    from sammed3d.io import Volume, VolumeError

    lab = np.zeros((4, 4, 4), np.uint8)
    a = Volume(lab, (1.0, 1.0, 1.0), (50.0, 40.0, -30.0))
    b = Volume(lab, (1.0, 1.0, 1.0), (47.0, 40.0, -30.0))
    check_same_grid(a, Volume(lab, (1.0, 1.0, 1.0), (50.0, 40.0, -30.0)))
    with pytest.raises(VolumeError) as info:
        check_same_grid(a, b, names=("image", "label map"))
    assert str(info.value) == (
        "image origin (50.0, 40.0, -30.0) != label map origin (47.0, 40.0, -30.0) (mm, LPS: "
        "ITK's axes; nibabel shows x and y negated)"
    )


def test_a_grid_in_another_axis_order_is_named_as_such():
    """2026-12-03 trial: a label stored LPS for a RAS image (the same voxels) was refused as
    an origin mismatch; the direction is the cause and is now named first, with axis codes."""
    from sammed3d.evaluation.metrics import check_same_grid
    from sammed3d.io import Volume, VolumeError

    image = Volume(np.zeros((10, 12, 8), np.float32), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    flipped = np.diag([-1.0, -1.0, 1.0])
    same_voxels = Volume(
        np.zeros((10, 12, 8), np.float32), (1.0, 1.0, 2.0), (9.0, 11.0, 0.0), flipped
    )
    elsewhere = Volume(np.zeros((10, 12, 8), np.float32), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), flipped)
    with pytest.raises(VolumeError) as info:
        check_same_grid(same_voxels, image, names=("label", "image"))
    assert str(info.value).endswith(
        "(LPS; axes RAS vs LPS: the same voxels stored in another axis order; reorient one to "
        "the other)"
    )
    with pytest.raises(VolumeError) as info:
        check_same_grid(elsewhere, image, names=("label", "image"))
    assert str(info.value).endswith("(LPS; axes RAS vs LPS)")
