"""SamMed3DPredictor: native-space masks through an oracle model, caching, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sammed3d import build_model
from sammed3d.config import ModelConfig
from sammed3d.data.transforms import (
    bbox_center,
    crop_or_pad,
    resample,
    to_canonical,
    zscore_foreground,
)
from sammed3d.inference import SamMed3DPredictor
from sammed3d.inference.predictor import check_modality, normalise_modality
from sammed3d.io import VolumeError
from sammed3d.modeling import stability_score

GEOMETRY_NAMES = ["lps_aniso", "ras_stored", "oblique", "permuted_flipped"]


def _sphere_setup(lab, geometry: str):
    """A sphere (r 9 mm) off the volume centre, and a click 4 mm off the sphere centre."""
    probe, _ = lab.make_phantom(geometry)
    center = lab.volume_center(probe) + np.array([3.0, -2.0, 4.0])
    radius = 9.0
    vol, xyz = lab.make_phantom(
        geometry, shapes=lambda p: np.linalg.norm(p - center, axis=-1) <= radius
    )
    dist = np.linalg.norm(xyz - center, axis=-1)
    click_phys = center + np.array([2.0, 2.0, -2.0])
    click = np.floor(vol.physical_to_index(click_phys) + 0.5).astype(int)
    return vol, dist, radius, click


@pytest.mark.parametrize("centred", [True, False], ids=["roi_on_click", "roi_off_click"])
@pytest.mark.parametrize("geometry", GEOMETRY_NAMES)
def test_sphere_lands_on_the_right_native_voxels(lab, geometry, centred):
    vol, dist, radius, click = _sphere_setup(lab, geometry)
    model = lab.OracleModel(img_size=48)
    predictor = SamMed3DPredictor(model, extend=False)
    predictor.set_image(vol)
    roi = None if centred else predictor.roi_at(click + np.array([4, -3, 2]))
    pred = predictor.predict([click], [1], roi=roi)
    if not centred:  # the click is off the ROI centre on every axis
        assert np.all(np.abs(pred.roi.native_to_roi(click.astype(float)) - 24) > 0.9)
    assert pred.mask.shape == vol.shape and pred.mask.dtype == bool
    truth = dist <= radius
    # inside / outside by more than one lattice voxel plus one native voxel: must agree
    margin = 1.5 + max(vol.spacing)
    assert pred.mask[dist <= radius - margin].all()
    assert not pred.mask[dist >= radius + margin].any()
    dice = 2 * (pred.mask & truth).sum() / (pred.mask.sum() + truth.sum())
    assert dice > 0.85
    assert pred.mask[tuple(click)]
    assert pred.low_res_logits.shape == (1, 1, 48, 48, 48)


def test_points_reach_the_model_in_roi_tensor_axis_order(lab):
    vol, _, _, click = _sphere_setup(lab, "permuted_flipped")
    model = lab.OracleModel(img_size=48)
    predictor = SamMed3DPredictor(model, extend=False)
    predictor.set_image(vol)
    roi = predictor.roi_at(click + np.array([5, -2, 3]))
    pred = predictor.predict([click], [1], roi=roi)
    sent = model.decode_calls[-1]["coords"][0, 0].numpy()
    expected = np.floor(pred.roi.native_to_roi(click.astype(float)) + 0.5)
    np.testing.assert_array_equal(sent, expected)
    # the first click of a ROI always gets a zero mask prompt (published convention)
    assert torch.count_nonzero(model.decode_calls[-1]["mask_input"]) == 0


def test_embedding_is_cached_per_roi_and_mask_prompt_is_fed_back(lab):
    vol, _, _, click = _sphere_setup(lab, "oblique")
    xyz = vol.index_to_physical(np.indices(vol.shape).transpose(1, 2, 3, 0))
    model = lab.OracleModel(img_size=48)
    predictor = SamMed3DPredictor(model, extend=False)
    predictor.set_image(vol)
    first = predictor.predict([click], [1])
    assert model.encoder_calls == 1
    second = predictor.predict(
        [click + np.array([1, 0, 0])], [0], mask_input=first.low_res_logits, roi=first.roi
    )
    assert model.encoder_calls == 1  # refinement: decoder only
    torch.testing.assert_close(model.decode_calls[-1]["mask_input"], first.low_res_logits)
    # the negative click carved a ball (3 ROI voxels = 4.5 mm) around itself, nowhere else
    neg = vol.index_to_physical(click + np.array([1, 0, 0]))
    d_neg = np.linalg.norm(xyz - neg, axis=-1)
    assert first.mask[d_neg <= 2.0].all() and not second.mask[d_neg <= 2.0].any()
    np.testing.assert_array_equal(second.mask[d_neg > 7.0], first.mask[d_neg > 7.0])
    predictor.set_image(vol)  # a new image drops the cache
    predictor.predict([click], [1])
    assert model.encoder_calls == 2


def test_roi_image_matches_the_whole_volume_pipeline(lab):
    vol, _, _, click = _sphere_setup(lab, "oblique")
    predictor = SamMed3DPredictor(lab.OracleModel(img_size=48), extend=False)
    predictor.set_image(vol)
    roi = predictor.roi_at(click)
    x = predictor.roi_image(roi)[0, 0].numpy()
    full = to_canonical(resample(vol, (1.5, 1.5, 1.5)))
    u = np.floor(predictor.lattice.native_to_lattice(click.astype(float)) + 0.5)
    crop, box = crop_or_pad(full.array, u, 48)
    assert box.start == roi.start
    np.testing.assert_allclose(x, zscore_foreground(crop), atol=1e-4)


def test_ct_clamp_applies_only_for_ct(lab):
    vol, _, _, click = _sphere_setup(lab, "lps_aniso")
    arr = vol.array.copy()
    arr[:, :, :4] = 2500.0  # very bright slab, clipped to 1000 for CT
    vol = vol.with_array(arr)
    for modality, clip in ((None, False), ("ct", True)):
        predictor = SamMed3DPredictor(lab.OracleModel(img_size=48), extend=False)
        predictor.set_image(vol, modality=modality)
        roi = predictor.roi_at(click)
        x = predictor.roi_image(roi)[0, 0].numpy()
        raw = roi.resample_from_native(vol.array)
        ref = np.clip(raw, -1000, 1000) if clip else raw
        np.testing.assert_allclose(x, zscore_foreground(ref), atol=1e-4)
        assert predictor.modality == ("CT" if clip else None)


def test_ct_without_values_below_zero_is_questioned(lab, caplog):
    """``--modality CT`` given to an MR image (no air or fat below 0 HU) was clamped unseen."""
    import logging

    vol, _, _, _ = _sphere_setup(lab, "lps_aniso")
    predictor = SamMed3DPredictor(lab.OracleModel(img_size=48), extend=False)
    positive = vol.with_array(np.abs(vol.array) + 5.0)
    with caplog.at_level(logging.WARNING, logger="sammed3d.inference.predictor"):
        predictor.set_image(positive, modality="CT")
        predictor.set_image(positive, modality="MR")  # said MR: nothing to question
        predictor.set_image(positive.with_array(positive.array - 1000.0), modality="CT")
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "has no value below 0" in said[0] and "--modality MR" in said[0]


def test_an_unknown_modality_is_refused_where_a_person_names_it(lab, tmp_path):
    """A typo such as "CTX" would skip the CT clamp silently (as the CLI's --modality
    refuses it); a file header's other codes are not typos and pass."""
    vol, _, _, _ = _sphere_setup(lab, "lps_aniso")
    predictor = SamMed3DPredictor(lab.OracleModel(img_size=48), extend=False)
    for bad in ("CTX", "", 3):
        with pytest.raises(ValueError, match=r"modality .* is not one of CT, MR, PET, SPECT"):
            predictor.set_image(vol, modality=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"modality 'CTX' is not one of"):
        SamMed3DPredictor(lab.OracleModel(img_size=48), modality="CTX")
    with pytest.raises(ValueError, match=r"modality 'CTX'"):  # before the file is read
        predictor.set_image(tmp_path / "missing.nii.gz", modality="CTX")
    predictor.set_image(vol, modality="T1")
    assert predictor.modality == "MR"
    assert check_modality(None) is None and check_modality(" ct ") == "CT"
    assert normalise_modality("MET_MOD_NM") == "NM"  # a header value


def test_roi_from_mask_uses_the_published_bbox_centring(lab):
    vol, dist, radius, _ = _sphere_setup(lab, "ras_stored")
    predictor = SamMed3DPredictor(lab.OracleModel(img_size=48), extend=False)
    predictor.set_image(vol)
    gt = dist <= radius
    roi = predictor.roi_from_mask(gt)
    label = to_canonical(resample(vol.with_array(gt.astype(np.uint8)), interpolation="nearest"))
    _, box = crop_or_pad(label.array, bbox_center(label.array), 48)
    assert roi.start == box.start
    with pytest.raises(ValueError, match="empty mask"):
        predictor.roi_from_mask(np.zeros(vol.shape, bool))


def test_object_larger_than_the_roi_is_extended_and_stitched(lab):
    # 6 mm voxels along i: a 300 mm long rod; ROI = 32 voxels x 3 mm = 96 mm
    vol, rod, radial = lab.make_rod()
    click = (30, 7, 7)

    model = lab.OracleModel(img_size=32)
    off = SamMed3DPredictor(model, target_spacing=(3.0, 3.0, 3.0), extend=False)
    off.set_image(vol)
    cut = off.predict([click], [1])
    assert len(cut.tiles) == 1
    assert cut.mask.sum() < 0.5 * rod.sum()

    on = SamMed3DPredictor(model, target_spacing=(3.0, 3.0, 3.0), max_rois=10)
    on.set_image(vol)
    full = on.predict([click], [1])
    assert len(full.tiles) > 2
    assert all(t.source == "extension" for t in full.tiles[1:])
    core = rod & (radial <= 9.0 - 4.0)
    assert full.mask[core].all()
    assert not full.mask[~rod & (radial > 9.0 + 4.0)].any()

    bounded = SamMed3DPredictor(model, target_spacing=(3.0, 3.0, 3.0), max_rois=2)
    bounded.set_image(vol)
    assert len(bounded.predict([click], [1]).tiles) == 2


def test_predict_before_set_image_raises(lab):
    predictor = SamMed3DPredictor(lab.OracleModel(img_size=32))
    with pytest.raises(RuntimeError, match="set_image"):
        predictor.predict([[1, 2, 3]], [1])


@pytest.mark.parametrize(
    ("array", "kwargs", "match"),
    [
        (np.random.default_rng(0).random((10, 10)), {"spacing": (1, 1)}, "3-D"),
        (np.random.default_rng(0).random((4, 10, 10, 10)), {"spacing": (1, 1, 1)}, "3-D"),
        (np.full((8, 9, 10), 7.0), {"spacing": (1, 1, 1)}, "constant"),
        (
            np.where(np.eye(10)[:, :, None] > 0, np.nan, 1.0) * np.ones((10, 10, 10)),
            {"spacing": (1, 1, 1)},
            "NaN",
        ),
        (
            np.random.default_rng(0).random((10, 10, 10)) * np.inf,
            {"spacing": (1, 1, 1)},
            "infinite",
        ),
        (
            (np.random.default_rng(0).random((10, 10, 10)) > 0.5).astype(np.uint8),
            {"spacing": (1, 1, 1)},
            "label map",
        ),
        (
            (np.random.default_rng(0).random((10, 10, 10)) > 0.5) * np.float32(0.999),
            {"spacing": (1, 1, 1)},
            "only 2 distinct values: 0, 0.999",
        ),
        (np.random.default_rng(0).random((10, 10, 10)) > 0.5, {"spacing": (1, 1, 1)}, "mask"),
        (np.random.default_rng(0).random((10, 10, 10)), {}, "spacing"),
    ],
)
def test_bad_images_get_clear_errors(lab, array, kwargs, match):
    predictor = SamMed3DPredictor(lab.OracleModel(img_size=32))
    with pytest.raises((ValueError, VolumeError), match=match):
        predictor.set_image(array, **kwargs)
    assert not predictor.is_image_set


def test_bad_points_get_clear_errors(lab):
    vol, _, _, click = _sphere_setup(lab, "lps_aniso")
    predictor = SamMed3DPredictor(lab.OracleModel(img_size=32), extend=False)
    predictor.set_image(vol)
    with pytest.raises(ValueError, match="outside the image"):
        predictor.predict([[vol.shape[0], 0, 0]], [1])
    with pytest.raises(ValueError, match="outside the image"):
        predictor.predict([[-1, 0, 0]], [1])
    with pytest.raises(ValueError, match="labels"):
        predictor.predict([click], [2])
    with pytest.raises(ValueError, match="positive"):
        predictor.predict([click], [0])
    with pytest.raises(ValueError, match="roi="):
        predictor.predict([click], [1], mask_input=torch.zeros(1, 1, 32, 32, 32))
    roi = predictor.roi_at((0, 0, 0))
    far = np.asarray(vol.shape) - 1
    with pytest.raises(ValueError, match="outside the ROI"):
        predictor.predict([far], [1], roi=roi)


def test_roi_from_box_centres_on_the_box(lab):
    vol, dist, radius, _ = _sphere_setup(lab, "lps_aniso")
    predictor = SamMed3DPredictor(lab.OracleModel(img_size=48), extend=False)
    predictor.set_image(vol)
    idx = np.argwhere(dist <= radius)
    lo, hi = idx.min(axis=0), idx.max(axis=0)
    roi = predictor.roi_from_box(lo, hi)
    # axis-aligned (LPS) image: the box's lattice centre lands at the ROI centre (+-0.5)
    centre = (roi.native_to_roi(lo.astype(float)) + roi.native_to_roi(hi.astype(float))) / 2
    assert np.all(np.abs(centre - 23.5) <= 1.0)
    with pytest.raises(ValueError, match="lo <= hi"):
        predictor.roi_from_box(hi, lo)


def test_modality_is_read_from_metadata_never_from_the_name(lab, tmp_path):
    import SimpleITK as sitk

    from sammed3d.inference import read_modality
    from sammed3d.io import write_volume

    vol, _, _, click = _sphere_setup(lab, "lps_aniso")
    named = write_volume(vol, tmp_path / "ct_liver.mha")  # MetaImage: MET_MOD_UNKNOWN
    assert read_modality(named) is None
    predictor = SamMed3DPredictor(lab.OracleModel(img_size=48), extend=False)
    predictor.set_image(named)
    assert predictor.modality is None
    image = sitk.ReadImage(str(named))
    image.SetMetaData("0008|0060", "CT")
    sitk.WriteImage(image, str(tmp_path / "plain.nrrd"))  # NRRD keeps custom keys
    assert read_modality(tmp_path / "plain.nrrd") == "CT"
    predictor.set_image(tmp_path / "plain.nrrd")
    assert predictor.modality == "CT"
    predictor.set_image(tmp_path / "plain.nrrd", modality="MR")
    assert predictor.modality == "MR"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("CT", "CT"),
        ("MET_MOD_CT", "CT"),
        ("mri", "MR"),
        ("T1", "MR"),
        ("FLAIR", "MR"),
        ("nm", "NM"),
    ],
)
def test_normalise_modality_agrees_with_the_dataset_reader(raw, expected):
    from sammed3d.inference.predictor import normalise_modality

    assert normalise_modality(raw) == expected
    assert normalise_modality(None) is None
    with pytest.raises(ValueError, match="non-empty string"):
        normalise_modality("  ")


def test_click_voxels_rounds_once_to_the_nearest_voxel_ties_up(lab):
    vol, _, _, _ = _sphere_setup(lab, "lps_aniso")  # shape (41, 35, 19)
    predictor = SamMed3DPredictor(lab.OracleModel(img_size=32), extend=False)
    predictor.set_image(vol)
    clicks = [[2.5, 3.49, 4.51], [-0.5, 0.0, 17.9], [30.4999999, 1, 2], [13.4999979, 1, 2]]
    got = predictor.click_voxels(clicks + [[13.4998, 1, 2]])
    assert got.dtype == np.int64 and got.shape == (5, 3)
    # ties go up (ITK's rule); values within 1e-4 voxel of a tie count as the tie (13.4999979:
    # the tie 13.5 reached from millimetres through a float32 spacing of 0.8 mm)
    assert got.tolist() == [[3, 3, 5], [0, 0, 18], [31, 1, 2], [14, 1, 2], [13, 1, 2]]
    assert predictor.click_voxels((7, 8, 9)).tolist() == [[7, 8, 9]]  # one point: (1, 3)
    with pytest.raises(ValueError) as exc:
        predictor.click_voxels([[1, 1, 1], [40.5, 2, 3]])
    assert str(exc.value) == (
        "click 2 at native voxel index (40.5, 2, 3) is outside the image: native voxel "
        "indices (i, j, k) must lie in [0, 40] x [0, 34] x [0, 18]"
    )
    with pytest.raises(ValueError, match=r"^click at native voxel index \(-0.6, 0, 0\) is outside"):
        predictor.click_voxels((-0.6, 0, 0))
    with pytest.raises(ValueError, match=r"\(N, 3\) native voxel indices .* got shape \(1, 2\)"):
        predictor.click_voxels([[1, 2]])
    with pytest.raises(ValueError, match="finite"):
        predictor.click_voxels([1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match="must be numbers"):
        predictor.click_voxels(["a", "b", "c"])
    with pytest.raises(RuntimeError, match="set_image"):
        SamMed3DPredictor(lab.OracleModel(img_size=32)).click_voxels((1, 2, 3))


def test_a_fractional_click_is_its_nearest_voxel(lab):
    vol, _, _, click = _sphere_setup(lab, "oblique")
    model = lab.OracleModel(img_size=48)
    predictor = SamMed3DPredictor(model, extend=False)
    predictor.set_image(vol)
    exact = predictor.predict([click], [1])
    nudged = predictor.predict([click + np.array([0.4, -0.49, 0.3])], [1])
    assert nudged.roi == exact.roi
    np.testing.assert_array_equal(nudged.mask, exact.mask)
    torch.testing.assert_close(model.decode_calls[-1]["coords"], model.decode_calls[-2]["coords"])
    # a tie goes up: k + 0.5 is voxel k + 1
    half = predictor.predict([click + np.array([0, 0, 0.5])], [1])
    up = predictor.predict([click + np.array([0, 0, 1])], [1])
    assert half.roi == up.roi
    torch.testing.assert_close(model.decode_calls[-1]["coords"], model.decode_calls[-2]["coords"])


def test_roi_at_keeps_a_continuous_centre(lab):
    """roi_at centres on a point (a box centre may be fractional), as the evaluation needs."""
    vol, _, _, click = _sphere_setup(lab, "lps_aniso")
    predictor = SamMed3DPredictor(lab.OracleModel(img_size=32), extend=False)
    predictor.set_image(vol)
    point = click + np.array([0.5, 0.5, 0.5])
    assert predictor.roi_at(point) == predictor.lattice.roi_at(point, 32)
    with pytest.raises(ValueError, match="outside the image"):
        predictor.roi_at((-1, 0, 0))


def test_check_roi_refuses_rois_of_other_images_and_sizes(lab):
    vol, _, _, click = _sphere_setup(lab, "lps_aniso")
    predictor = SamMed3DPredictor(lab.OracleModel(img_size=32), extend=False)
    predictor.set_image(vol)
    roi = predictor.roi_at(click)
    predictor.check_roi(roi)
    with pytest.raises(ValueError, match="ROI size"):
        predictor.check_roi(predictor.lattice.roi(roi.start, 16))
    with pytest.raises(TypeError, match="RoiGrid"):
        predictor.check_roi(roi.start)  # type: ignore[arg-type]
    predictor.set_image(vol)
    with pytest.raises(ValueError, match="another image"):
        predictor.check_roi(roi)
    with pytest.raises(ValueError, match="another image"):
        predictor.predict([click], [1], roi=roi)


def test_from_checkpoint_resolves_device_and_checkpoint_once(tmp_path, tiny_model, monkeypatch):
    from sammed3d import paths, save_checkpoint
    from sammed3d.devices import DeviceError

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    path = save_checkpoint(tiny_model, tmp_path / "tiny.pth")
    resolved = []
    require = paths.require_checkpoint

    def counting(arg=None):
        resolved.append(arg)
        return require(arg)

    monkeypatch.setattr(paths, "require_checkpoint", counting)
    predictor = SamMed3DPredictor.from_checkpoint(str(path), device="auto")
    assert resolved == [str(path)]
    assert predictor.checkpoint == path
    expected = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert predictor.device == expected  # "auto": the same rule as --device auto
    assert next(predictor.model.parameters()).device == expected
    monkeypatch.setenv("SAMMED3D_CHECKPOINT", str(path))
    resolved.clear()
    assert SamMed3DPredictor.from_checkpoint(None).checkpoint == path  # the default
    assert resolved == [None]
    assert SamMed3DPredictor(tiny_model).checkpoint is None  # built in memory
    with pytest.raises(DeviceError, match="unknown device 'gpu0'"):
        SamMed3DPredictor(tiny_model, device="gpu0")
    if torch.version.cuda is None:
        with pytest.raises(DeviceError, match="no CUDA support"):
            SamMed3DPredictor.from_checkpoint(str(path), device="cuda")


@pytest.mark.parametrize("multimask", [True, False], ids=["first_click_multimask", "published"])
def test_first_click_keeps_the_mask_the_iou_head_ranks_first(lab, multimask):
    torch.manual_seed(3)
    model = build_model("sam_med3d_tiny_dense")
    model.config = dataclasses.replace(model.config, first_click_multimask=multimask)
    vol, _, _, click = _sphere_setup(lab, "ras_stored")
    predictor = SamMed3DPredictor(model, extend=False)
    predictor.set_image(vol)
    roi = predictor.roi_at(click)
    coords = torch.tensor([[[30.0, 33.0, 31.0]]])
    labels = torch.tensor([[1]])
    emb = predictor.get_image_embedding(roi)
    zeros = torch.zeros((1, 1, *model.low_res_size))
    with torch.no_grad():
        multi, iou = model.decode(emb, coords, labels, zeros, multimask_output=True)
        single, _ = model.decode(emb, coords, labels, zeros)
    first, first_iou = predictor.predict_torch(coords, labels, None, roi=roi)
    if multimask:
        best = int((iou[0].clamp(min=0) * stability_score(multi)[0]).argmax())
        torch.testing.assert_close(first, multi[:, best : best + 1])
        torch.testing.assert_close(first_iou, iou[:, best : best + 1])
    else:
        torch.testing.assert_close(first, single)
    # a refinement (previous logits given) is always mask 0
    refined, _ = predictor.predict_torch(coords, labels, first, roi=roi)
    with torch.no_grad():
        expected, _ = model.decode(emb, coords, labels, first)
    torch.testing.assert_close(refined, expected)
    # asking for the multimask outputs still returns all three
    three, _ = predictor.predict_torch(coords, labels, None, roi=roi, multimask_output=True)
    assert three.shape[1] == 3


@pytest.mark.parametrize(
    ("option", "value", "limit"),
    [
        ("refine_boundary", 3.0, "at most 10 mm"),
        ("contrast_guard", 0.4, "at most 10,"),
        ("rim_edit", 3.0, "a radius of at most 10 mm"),
    ],
)
def test_rule_settings_come_from_the_config_and_are_checked(lab, option, value, limit):
    """The inference rules a checkpoint carries (boundary refinement, contrast guard, rim
    edit)."""
    model = lab.OracleModel(img_size=32)
    assert getattr(SamMed3DPredictor(model), option) == 0.0  # no config: off
    model.config = ModelConfig(**{option: value})
    assert getattr(SamMed3DPredictor(model), option) == value
    assert getattr(SamMed3DPredictor(model, **{option: 0}), option) == 0.0
    for bad in (-1.0, float("nan"), True, 10.5, np.bool_(True)):
        with pytest.raises(ValueError, match=f"{option} must be 0"):
            SamMed3DPredictor(model, **{option: bad})
    assert getattr(SamMed3DPredictor(model, **{option: 10}), option) == 10.0
    for bad in (-2.0, 20.0):
        with pytest.raises(ValueError, match=limit):
            ModelConfig(**{option: bad})
    # numpy scalars are numbers too; -0 is off
    assert getattr(SamMed3DPredictor(model, **{option: np.float32(0.5)}), option) == 0.5
    assert getattr(SamMed3DPredictor(model, **{option: np.int64(1)}), option) == 1.0
    assert str(getattr(SamMed3DPredictor(model, **{option: -0.0}), option)) == "0.0"
    assert ModelConfig() == ModelConfig(**{option: value})  # a behaviour, not compared


@pytest.mark.parametrize(
    ("option", "default", "choices"),
    [("first_pick", "model", "model, edges"), ("later_check", "none", "none, edges")],
)
def test_the_rule_choice_comes_from_the_config_and_is_checked(lab, option, default, choices):
    model = lab.OracleModel(img_size=32)
    # no config: the model's ranking / no check
    assert getattr(SamMed3DPredictor(model), option) == default
    model.config = ModelConfig(**{option: "edges"})
    assert getattr(SamMed3DPredictor(model), option) == "edges"
    assert getattr(SamMed3DPredictor(model, **{option: default}), option) == default
    for bad in ("", "Edges", 1):
        with pytest.raises(ValueError, match=f"{option} must be one of {choices}"):
            SamMed3DPredictor(model, **{option: bad})


def test_a_roi_without_positive_voxels_is_a_one_line_error_with_a_hint():
    """SAM-Med3D z-scores its input over the voxels > 0: an image shifted below 0 cannot be
    normalised; the error names the ROI's centre as such and says what to do."""
    from sammed3d.inference import InteractiveSession

    rng = np.random.default_rng(0)
    img = (rng.normal(0, 20, (40, 40, 40)) - 500).astype(np.float32)
    session = InteractiveSession(SamMed3DPredictor.from_checkpoint(None))
    session.set_image(img, spacing=(1.5, 1.5, 1.5))
    with pytest.raises(ValueError) as err:
        session.add_click((20, 20, 20))
    text = str(err.value)
    assert "\n" not in text and "model's ROI centred at native voxel" in text
    assert "needs voxels > 0, found none" in text and "positive intensities" in text
