"""InteractiveSession: published click loop, objects and label maps, undo/redo, export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sammed3d.clicks import Click
from sammed3d.inference import InteractiveSession, SamMed3DPredictor
from sammed3d.io import VolumeError, read_volume, write_volume


def _two_spheres(lab, geometry="oblique"):
    probe, _ = lab.make_phantom(geometry)
    c0 = lab.volume_center(probe)
    a = c0 + np.array([-8.0, -6.0, 8.0])
    b = c0 + np.array([9.0, 7.0, -9.0])
    vol, xyz = lab.make_phantom(
        geometry,
        shapes=lambda p: (
            (np.linalg.norm(p - a, axis=-1) <= 7.0) | (np.linalg.norm(p - b, axis=-1) <= 7.0)
        ),
    )
    idx = [np.floor(vol.physical_to_index(c) + 0.5).astype(int) for c in (a, b)]
    dist = [np.linalg.norm(xyz - c, axis=-1) for c in (a, b)]
    return vol, xyz, idx, dist


def _session(lab, vol, **kwargs):
    model = lab.OracleModel(img_size=48)
    session = InteractiveSession(SamMed3DPredictor(model, extend=False), **kwargs)
    session.set_image(vol)
    return session, model


def test_published_interaction_one_new_click_plus_previous_logits(lab):
    vol, _, (ca, _), _ = _two_spheres(lab)
    session, model = _session(lab, vol)
    session.add_point(ca)
    first_logits = session.low_res_logits.clone()
    assert torch.count_nonzero(model.decode_calls[-1]["mask_input"]) == 0
    session.add_point(ca + np.array([1, 1, 0]), positive=False)
    call = model.decode_calls[-1]
    assert call["coords"].shape == (1, 1, 3)  # only the new click
    assert call["labels"].tolist() == [[0]]
    torch.testing.assert_close(call["mask_input"], first_logits)
    assert model.encoder_calls == 1  # same ROI: embedding reused


def test_accumulate_gives_every_click_of_the_roi(lab):
    vol, _, (ca, _), _ = _two_spheres(lab)
    session, model = _session(lab, vol, accumulate_clicks=True)
    session.add_point(ca)
    session.add_point(ca + np.array([1, 1, 0]), positive=False)
    assert model.decode_calls[-1]["coords"].shape == (1, 2, 3)
    assert model.decode_calls[-1]["labels"].tolist() == [[1, 0]]


def test_objects_keep_their_own_masks_and_labels(lab):
    vol, _, (ca, cb), (da, db) = _two_spheres(lab)
    session, _ = _session(lab, vol)
    mask_a = session.add_point(ca)
    assert session.current_label == 1
    assert mask_a[da <= 4.0].all() and not mask_a[db <= 7.0].any()
    assert session.new_object(label=7) == 7
    mask_b = session.add_point(cb)
    assert mask_b[db <= 4.0].all() and not mask_b[da <= 7.0].any()
    np.testing.assert_array_equal(session.object_mask(1), mask_a)  # untouched by object 7
    lm = session.label_map
    assert lm.dtype == np.uint8 and lm.shape == vol.shape
    assert set(np.unique(lm)) == {0, 1, 7}
    np.testing.assert_array_equal(lm == 1, mask_a)
    np.testing.assert_array_equal(lm == 7, mask_b)
    # editing object 1 again does not change object 7
    session.select_object(1)
    session.add_point(ca, positive=False)
    np.testing.assert_array_equal(session.object_mask(7), mask_b)
    assert session.labels == (1, 7)
    with pytest.raises(ValueError, match="exists"):
        session.new_object(7)
    with pytest.raises(ValueError, match="no object"):
        session.select_object(3)
    with pytest.raises(ValueError, match="1..65535"):
        session.new_object(0)


def test_overlap_rule_later_on_top_by_default_or_earlier_kept(lab):
    vol, _, (ca, _), _ = _two_spheres(lab)
    session, _ = _session(lab, vol)
    m1 = session.add_point(ca)
    session.new_object(300)  # > 255: uint16 label map
    m2 = session.add_point(ca)
    np.testing.assert_array_equal(m1, m2)
    lm = session.label_map
    assert lm.dtype == np.uint16
    assert (lm[m1] == 300).all()  # default: the later object on top
    assert (session.make_label_map("earlier-kept")[m1] == 1).all()
    kept = InteractiveSession(session.predictor, overlap="earlier-kept")
    assert kept.overlap == "earlier-kept"
    with pytest.raises(ValueError, match="overlap must be one of"):
        session.make_label_map("first")


def test_multi_level_undo_redo_restores_exact_states(lab):
    vol, _, (ca, cb), _ = _two_spheres(lab)
    session, _ = _session(lab, vol)
    s1 = session.add_point(ca).copy()
    s2 = session.add_point(ca + np.array([0, 1, 1]), positive=False).copy()
    s3 = session.add_point(ca + np.array([1, 0, -1]), positive=False).copy()
    assert s1.sum() > s2.sum() > s3.sum()
    assert session.undo()
    np.testing.assert_array_equal(session.mask, s2)
    assert len(session.clicks) == 2
    assert session.undo()
    np.testing.assert_array_equal(session.mask, s1)
    assert session.redo() and session.redo()
    np.testing.assert_array_equal(session.mask, s3)
    assert not session.redo()
    assert session.undo()
    # a new action drops the redo branch
    s4 = session.add_point(cb)
    assert not session.can_redo
    assert s4.sum() > s2.sum()
    while session.undo():
        pass
    assert session.labels == () and not session.mask.any()
    assert not session.undo()
    # undoing and redoing the whole history brings object 1 back with its mask
    while session.redo():
        pass
    np.testing.assert_array_equal(session.mask, s4)


def test_undo_spans_objects(lab):
    vol, _, (ca, cb), _ = _two_spheres(lab)
    session, _ = _session(lab, vol)
    m_a = session.add_point(ca).copy()
    session.new_object()
    session.add_point(cb)
    session.undo()  # the click on object 2
    session.undo()  # creating object 2
    assert session.labels == (1,) and session.current_label == 1
    np.testing.assert_array_equal(session.mask, m_a)


def test_reset_and_click_errors(lab):
    vol, _, (ca, _), _ = _two_spheres(lab)
    session, _ = _session(lab, vol)
    with pytest.raises(ValueError, match="positive"):
        session.add_point(ca, positive=False)
    assert session.labels == ()
    with pytest.raises(ValueError, match="outside the image"):
        session.add_point((vol.shape[0] + 3, 0, 0))
    session.add_point(ca)
    far = np.asarray(vol.shape) - 1
    if not session.roi.contains_native(far[None].astype(float))[0]:
        with pytest.raises(ValueError, match="nothing to remove"):
            session.add_point(far, positive=False)
    session.reset()
    assert session.labels == () and session.clicks == () and not session.can_undo
    assert not session.label_map.any()
    with pytest.raises(RuntimeError, match="set_image"):
        InteractiveSession(SamMed3DPredictor(lab.OracleModel(img_size=48))).add_point(ca)


def test_contains_reads_a_voxel_of_an_objects_mask(lab):
    vol, _, (ca, cb), _ = _two_spheres(lab)
    session, _ = _session(lab, vol)
    assert session.contains((0, 0, 0)) is False  # no object yet
    session.add_point(ca)
    mask = session.mask
    rng = np.random.default_rng(0)
    inside = np.argwhere(mask)[rng.choice(int(mask.sum()), 20)]
    for voxel in [*inside, *rng.integers(0, vol.shape, (40, 3)), np.asarray(vol.shape) - 1]:
        assert session.contains(tuple(int(v) for v in voxel)) == bool(mask[tuple(voxel)])
    assert session.contains(tuple(int(round(v)) for v in ca), label=1)
    with pytest.raises(ValueError, match="no object 3"):
        session.contains((1, 2, 3), label=3)
    with pytest.raises(ValueError, match="three whole numbers"):
        session.contains((1.5, 2, 3))


def test_roi_can_be_placed_from_a_mask_or_a_centre(lab):
    vol, _, (ca, cb), (da, _) = _two_spheres(lab)
    session, _ = _session(lab, vol)
    gt = da <= 7.0
    session.new_object()
    session.set_roi_from_mask(gt)
    expected = session.predictor.roi_from_mask(gt)
    session.add_point(ca + np.array([0, 1, 0]))
    assert session.roi == expected
    session.new_object()
    session.set_roi_center(cb + np.array([3, 0, -2]))
    session.add_point(cb)
    assert session.roi == session.predictor.roi_at(cb + np.array([3, 0, -2]))
    with pytest.raises(ValueError, match="already has a prediction"):
        session.set_roi_center(cb)
    # with a ROI set, the first click may be negative
    session.new_object()
    session.set_roi_center(ca)
    mask = session.add_point(ca, positive=False)
    assert not mask.any()


def test_refinement_outside_the_first_roi_opens_a_new_one(lab):
    vol, _, (ca, cb), (da, db) = _two_spheres(lab, "lps_aniso")
    model = lab.OracleModel(img_size=16)  # 24 mm ROIs: the two spheres need two ROIs
    session = InteractiveSession(SamMed3DPredictor(model, extend=False))
    session.set_image(vol)
    session.add_point(ca)
    assert not session.roi.contains_native(cb[None].astype(float))[0]
    mask = session.add_point(cb)
    assert len(session.tiles) == 2 and model.encoder_calls == 2
    assert mask[da <= 4.0].all() and mask[db <= 4.0].all()


def test_extension_in_the_session(lab):
    vol, rod, radial = lab.make_rod()
    model = lab.OracleModel(img_size=32)
    pred = SamMed3DPredictor(model, target_spacing=(3.0, 3.0, 3.0), max_rois=10)
    session = InteractiveSession(pred)
    session.set_image(vol)
    mask = session.add_point((30, 7, 7))
    n_tiles = len(session.tiles)
    assert n_tiles > 2
    assert mask[rod & (radial <= 5.0)].all()
    encodes = model.encoder_calls
    # a refinement click re-grows the extension from cached embeddings (decoder only)
    session.add_point((30, 7, 7))
    assert model.encoder_calls == encodes and len(session.tiles) == n_tiles
    session.undo()
    np.testing.assert_array_equal(session.mask, mask)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_export_label_map_keeps_geometry_and_protects_the_input(lab, tmp_path, suffix):
    vol, _, (ca, _), _ = _two_spheres(lab, "permuted_flipped")
    src = write_volume(vol, tmp_path / f"image{suffix}")
    session, _ = _session(lab, src)
    session.add_point(ca)
    out = session.export_label_map(tmp_path / f"labels{suffix}")
    back = read_volume(out)
    np.testing.assert_array_equal(back.array, session.label_map)
    np.testing.assert_allclose(back.spacing, vol.spacing, rtol=1e-6)
    np.testing.assert_allclose(back.origin, vol.origin, atol=1e-4)
    np.testing.assert_allclose(back.direction, vol.direction, atol=1e-6)
    with pytest.raises(ValueError, match="overwrite"):
        session.export_label_map(src)


def test_export_refuses_an_existing_file_unless_told(lab, tmp_path):
    """An image set from an array has no file the session knows: a trial's export over the
    scan it had loaded itself replaced the scan (the default was to replace)."""
    vol, _, (ca, _), _ = _two_spheres(lab)
    scan = write_volume(vol, tmp_path / "t1.nii.gz")
    session, _ = _session(lab, vol)  # from the array, not the file
    session.add_point(ca)
    before = scan.read_bytes()
    with pytest.raises(FileExistsError, match="pass overwrite=True to replace it"):
        session.export_label_map(scan)
    assert scan.read_bytes() == before
    out = session.export_label_map(scan, overwrite=True)  # asked for: replaced
    np.testing.assert_array_equal(read_volume(out).array, session.label_map)


def _ball_model(lab):
    """A model that segments a ball of ``radius`` ROI voxels around the newest positive click
    (set ``radius`` between objects: an organ, then a tumour inside it)."""
    import torch.nn.functional as F

    class BallModel(lab.OracleModel):
        radius = 8.0

        def decode(self, image_embeddings, point_coords, point_labels, mask_input, **kw):
            grid = np.indices((self.img_size,) * 3)
            p = [float(v) for v in point_coords[0, -1]]
            ball = sum((grid[a] - p[a]) ** 2 for a in range(3)) <= self.radius**2
            logits = torch.from_numpy(np.where(ball, 10.0, -10.0).astype(np.float32))[None, None]
            low = F.interpolate(logits, size=self.low_res_size, mode="trilinear")
            return low, torch.ones(1, 1)

    return BallModel(img_size=48)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_a_nested_object_is_not_lost_in_the_export(lab, tmp_path, caplog, suffix):
    vol, _, (ca, _), _ = _two_spheres(lab)
    model = _ball_model(lab)
    session = InteractiveSession(SamMed3DPredictor(model, extend=False))
    session.set_image(vol)
    organ = session.add_point(ca)  # object 1: the large one
    model.radius = 2.5
    session.new_object()
    tumour = session.add_point(ca)  # object 2: inside it
    assert tumour.sum() > 0 and (organ[tumour]).all()
    out = tmp_path / f"labels{suffix}"
    with caplog.at_level("WARNING"):
        session.export_label_map(out)  # default: later objects on top
    written = read_volume(out).array
    assert int((written == 2).sum()) == int(tumour.sum())
    assert int((written == 1).sum()) == int(organ.sum() - tumour.sum())
    assert "warning" not in caplog.text
    with caplog.at_level("WARNING"):
        session.export_label_map(out, overlap="earlier-kept", overwrite=True)
    assert int((read_volume(out).array == 2).sum()) == 0
    assert f"object 2 keeps 0 of its {int(tumour.sum())} voxels" in caplog.text


def test_export_warns_about_an_empty_object(lab, tmp_path, caplog):
    vol, _, (ca, _), _ = _two_spheres(lab)
    session, _ = _session(lab, vol)
    session.add_point(ca)
    session.new_object(5)  # never clicked
    with caplog.at_level("WARNING"):
        session.export_label_map(tmp_path / "l.nii.gz")
    assert "object 5 is empty" in caplog.text


def test_export_checks_its_path_before_it_warns(lab, tmp_path, caplog):
    """A refused output (the image's own file, no volume ending, an existing file without
    overwrite) fails before the warnings about the label map's content."""
    vol, _, (ca, _), _ = _two_spheres(lab)
    src = write_volume(vol, tmp_path / "image.nii.gz")
    session, _ = _session(lab, src)
    session.add_point(ca)
    session.new_object(5)  # never clicked: an export warns that it is empty
    (tmp_path / "old.nii.gz").write_bytes(b"x")
    refused = [
        (src, {}, VolumeError, "refusing to overwrite the input file"),
        (tmp_path / "labels.png", {}, VolumeError, "must end in .nii.gz"),
        (tmp_path / "old.nii.gz", {"overwrite": False}, FileExistsError, "exists"),
    ]
    for path, kwargs, error, match in refused:
        with caplog.at_level("WARNING"), pytest.raises(error, match=match):
            session.export_label_map(path, **kwargs)
        assert caplog.text == "", path
    with caplog.at_level("WARNING"):
        session.export_label_map(tmp_path / "labels.nii.gz")
    assert "object 5 is empty" in caplog.text


@pytest.mark.parametrize(
    ("image", "got"),
    [([[[1.0, 2.0]]], "a list of 1 item"), (None, "None"), (3, "an int")],
)
def test_an_image_of_another_kind_is_named(lab, image, got):
    """``set_image(list)`` raised a TypeError where every other bad image is a ValueError."""
    session = InteractiveSession(SamMed3DPredictor(lab.OracleModel(img_size=32)))
    with pytest.raises(VolumeError) as exc:
        session.set_image(image, spacing=(1.0, 1.0, 1.0))
    assert str(exc.value) == (
        "image: expected a 3-D numpy array or torch tensor (with spacing= or affine=), a "
        f"sammed3d.io.Volume, or the path of an image file or DICOM folder, got {got}"
    )
    assert isinstance(exc.value, ValueError) and not session.predictor.is_image_set


def test_add_click_returns_the_voxel_used_and_voxel_count_needs_no_full_mask(lab):
    vol, _, (ca, cb), _ = _two_spheres(lab)
    session, _ = _session(lab, vol)
    assert session.voxel_count() == 0  # no object yet
    click = session.add_click(ca + np.array([0.3, -0.4, 0.5]))  # fractional: nearest voxel
    assert click == Click(tuple(int(v) for v in ca + np.array([0, 0, 1])), True)
    assert session.clicks == (click,)
    first = session.mask
    assert session.voxel_count() == int(first.sum()) > 0
    session.new_object(4)
    assert session.voxel_count() == 0
    session.add_click(cb)
    assert session.voxel_count() == int(session.mask.sum()) > 0
    assert session.voxel_count(1) == int(first.sum())
    with pytest.raises(ValueError, match="no object 9"):
        session.voxel_count(9)
    # add_point is add_click plus the full mask
    np.testing.assert_array_equal(session.add_point(cb, positive=False), session.mask)


def test_the_session_uses_only_the_predictors_public_members(lab):
    """Every attribute of the predictor read from outside its own module is public."""
    import sys

    used: set[str] = set()

    class Watched(SamMed3DPredictor):
        def __getattribute__(self, name):
            caller = sys._getframe(1).f_globals.get("__name__")
            if caller != "sammed3d.inference.predictor":
                used.add(name)
            return super().__getattribute__(name)

    vol, _, (ca, cb), (da, _) = _two_spheres(lab)
    session = InteractiveSession(Watched(lab.OracleModel(img_size=48), max_rois=3))
    session.set_image(vol)
    session.add_point(ca)
    session.add_point(ca + np.array([1, 1, 0]), positive=False)
    session.new_object()
    session.set_roi_from_mask(da <= 7.0)
    session.add_point(ca)
    session.new_object()
    session.set_roi_center(cb)
    session.add_point(cb)
    session.undo()
    session.redo()
    assert session.label_map.any()
    assert used, "the watch saw nothing"
    assert {"click_voxels", "predict_tile", "native_block"} <= used
    assert not [n for n in used if n.startswith("_") and not n.startswith("__")], used
