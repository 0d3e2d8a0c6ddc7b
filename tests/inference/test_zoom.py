"""Zoom-in at a small object's first click (sammed3d.inference.zoom, the predictor, the session).

The oracle model of ``conftest.py`` segments the bright component under a click from the ROI
tensor it is given, so a zoomed ROI placed or resampled wrongly shows up as a wrong native
mask.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import ndimage

from sammed3d.inference import InteractiveSession, SamMed3DPredictor
from sammed3d.inference.extend import Tile
from sammed3d.inference.geometry import Lattice
from sammed3d.inference.zoom import ZOOM_FILL, resample_roi_logits, zoom_roi
from sammed3d.io import Volume

MAIN, ZOOM, SIZE = 2.0, 1.0, 32  # a 64 mm ROI, zoomed: a 32 mm ROI


def _scene(slab: bool = False) -> tuple[Volume, SimpleNamespace]:
    """96^3 mm at 1 mm: a bright ball (radius 5 mm) and, optionally, a bright slab 10 mm from
    it that spans the whole image in two axes."""
    shape = (96, 96, 96)
    grid = np.indices(shape).transpose(1, 2, 3, 0).astype(np.float64)
    ball_centre = np.array([40.0, 48.0, 48.0])
    ball = np.linalg.norm(grid - ball_centre, axis=-1) <= 5.0
    slab_mask = (grid[..., 0] >= 56) & (grid[..., 0] <= 66) if slab else np.zeros(shape, bool)
    rng = np.random.default_rng(0)
    img = np.where(ball | slab_mask, 300.0, 100.0) + rng.uniform(0, 8, shape)
    vol = Volume(img.astype(np.float32), (1.0, 1.0, 1.0))
    dist = np.linalg.norm(grid - ball_centre, axis=-1)
    return vol, SimpleNamespace(ball=ball, slab=slab_mask, dist=dist, centre=(40, 48, 48))


def _predictor(lab, zoom: float = ZOOM, **kwargs) -> tuple[SamMed3DPredictor, object]:
    model = lab.OracleModel(img_size=SIZE)
    pred = SamMed3DPredictor(model, target_spacing=(MAIN,) * 3, zoom_spacing=zoom, **kwargs)
    return pred, model


# ------------------------------------------------------------------------ pure functions


def test_zoom_roi_only_for_a_small_mask_away_from_the_faces():
    vol = Volume(np.zeros((96, 96, 96), np.float32), (1.0, 1.0, 1.0))
    main = Lattice.from_native(vol, (MAIN,) * 3)
    fine = Lattice.from_native(vol, (ZOOM,) * 3)
    roi = main.roi_at((48, 48, 48), SIZE)
    mask = np.zeros((SIZE,) * 3, dtype=bool)
    assert zoom_roi(mask, roi, (48, 48, 48), fine) is None  # empty
    mask[14:19, 14:19, 14:19] = True  # 10 mm: at most 0.55 x 32 mm
    zoomed = zoom_roi(mask, roi, (48, 48, 48), fine)
    assert zoomed is not None and zoomed.lattice is fine and zoomed.size == (SIZE,) * 3
    np.testing.assert_array_equal(
        zoomed.native_points_to_voxels(np.array([[48, 48, 48]])), [[16] * 3]
    )
    wide = np.zeros_like(mask)
    wide[8:18, 14:16, 14:16] = True  # 20 mm along one axis: more than 17.6 mm
    assert zoom_roi(wide, roi, (48, 48, 48), fine) is None
    assert zoom_roi(wide, roi, (48, 48, 48), fine, fill=0.7) is not None
    face = np.zeros_like(mask)
    face[0:3, 14:16, 14:16] = True  # on a ROI face: a large object
    assert zoom_roi(face, roi, (48, 48, 48), fine) is None
    assert 0 < ZOOM_FILL < 1


def test_resample_roi_logits_is_exact_for_a_linear_field_and_fills_outside():
    vol = Volume(np.zeros((96, 96, 96), np.float32), (1.0, 1.0, 1.0))
    main = Lattice.from_native(vol, (MAIN,) * 3)
    fine = Lattice.from_native(vol, (ZOOM,) * 3)
    big, small = main.roi_at((48, 48, 48), SIZE), fine.roi_at((44, 50, 47), SIZE)

    def field(roi, n):  # 0.3 x + 0.2 y - 0.1 z in native mm at the cell centres
        axis = (np.arange(n) + 0.5) * SIZE / n - 0.5
        pts = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
        ijk = roi.roi_to_native(pts)
        return torch.tensor((ijk @ np.array([0.3, 0.2, -0.1])).reshape(1, 1, n, n, n)).float()

    same = resample_roi_logits(field(big, 16), big, big, 16)
    torch.testing.assert_close(same, field(big, 16))
    out = resample_roi_logits(field(small, 16), small, big, 16)
    truth = field(big, 16)
    # cells of the big ROI well inside the small one get the field exactly (trilinear)
    axis = (np.arange(16) + 0.5) * SIZE / 16 - 0.5
    pts = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    inner = small.contains_native(big.roi_to_native(pts), margin=3).reshape(16, 16, 16)
    assert inner.sum() > 20
    torch.testing.assert_close(
        out[0, 0][torch.from_numpy(inner)], truth[0, 0][torch.from_numpy(inner)]
    )
    outside = ~small.contains_native(big.roi_to_native(pts), margin=-2).reshape(16, 16, 16)
    assert outside.any()
    low = float(field(small, 16).min())
    assert torch.allclose(out[0, 0][torch.from_numpy(outside)], torch.tensor(low))


# ------------------------------------------------------------------------------ predictor


def test_zoom_setting_defaults_to_the_checkpoint_and_is_checked(lab):
    model = lab.OracleModel(img_size=SIZE)
    assert SamMed3DPredictor(model).zoom_spacing == 0.0  # no config: off
    model.config = SimpleNamespace(zoom_spacing=1.0)
    assert SamMed3DPredictor(model).zoom_spacing == 1.0
    assert SamMed3DPredictor(model, zoom_spacing=0).zoom_spacing == 0.0
    with pytest.raises(ValueError, match="must be finer than the 1.5 mm lattice"):
        SamMed3DPredictor(model, zoom_spacing=1.5)
    # the checkpoint's zoom on a lattice that is not coarser: off, not an error
    assert SamMed3DPredictor(model, target_spacing=(1.0,) * 3).zoom_spacing == 0.0
    with pytest.raises(ValueError, match="zoom_spacing must be 0"):
        SamMed3DPredictor(model, zoom_spacing=-1.0)
    with pytest.raises(ValueError, match="zoom_fill must be in"):
        SamMed3DPredictor(model, zoom_fill=0.0)


def test_predict_zooms_into_a_small_object_and_keeps_its_shape(lab):
    vol, s = _scene()
    pred, model = _predictor(lab)
    pred.set_image(vol)
    out = pred.predict([s.centre], [1])
    assert model.encoder_calls == 2  # the main ROI, then the zoomed one
    assert out.roi.lattice.grid.spacing == (ZOOM,) * 3 and pred.is_zoomed(out.tiles[0])
    assert out.mask[s.dist <= 4.0].all() and not out.mask[s.dist >= 6.5].any()
    plain, _ = _predictor(lab, zoom=0.0)
    plain.set_image(vol)
    assert plain.predict([s.centre], [1]).roi.lattice.grid.spacing == (MAIN,) * 3


# -------------------------------------------------------------------------------- session


def test_session_zooms_a_small_object_and_undo_restores(lab):
    vol, s = _scene()
    pred, model = _predictor(lab)
    session = InteractiveSession(pred)
    session.set_image(vol)
    mask = session.add_point(s.centre)
    assert pred.is_zoomed(session.tiles[0]) and len(session.tiles) == 1
    assert mask[s.dist <= 4.0].all() and not mask[s.dist >= 6.5].any()
    # a refinement inside the zoomed ROI stays there, with its logits as the prompt
    prompt = session.low_res_logits.clone()
    session.add_point((42, 48, 48))
    assert pred.is_zoomed(session.tiles[0])
    torch.testing.assert_close(model.decode_calls[-1]["mask_input"], prompt)
    session.undo()
    np.testing.assert_array_equal(session.mask, mask)


def test_an_object_that_outgrows_the_zoomed_roi_goes_back_to_the_main_lattice(lab):
    vol, s = _scene(slab=True)
    pred, _ = _predictor(lab, extend=False)
    session = InteractiveSession(pred, accumulate_clicks=True)
    session.set_image(vol)
    session.add_point(s.centre)
    assert pred.is_zoomed(session.tiles[0])
    # the slab, inside the zoomed ROI, reaches its faces: the object returns to 2 mm
    mask = session.add_point((58, 48, 48))
    assert [t.roi.lattice.grid.spacing for t in session.tiles] == [(MAIN,) * 3]
    assert session.tiles[0].roi == pred.roi_at(s.centre)  # where it would be without zoom
    assert mask[s.dist <= 4.0].all()  # the ball came along through the resampled prompt
    core = np.argwhere(s.slab)
    core = core[(core[:, 0] >= 58) & (core[:, 0] <= 64)]  # 2 mm from the slab's faces
    core = core[session.tiles[0].roi.contains_native(core, margin=1)]
    assert len(core) > 1000 and mask[tuple(core.T)].all()


def test_a_click_outside_the_zoomed_roi_moves_the_object_back(lab):
    vol, s = _scene(slab=True)
    pred, _ = _predictor(lab, extend=False)
    session = InteractiveSession(pred)
    session.set_image(vol)
    session.add_point(s.centre)
    assert pred.is_zoomed(session.tiles[0])
    far = (64, 48, 48)  # 24 mm away: outside the 32 mm zoomed ROI
    assert not session.tiles[0].roi.contains_native(np.array([far]))[0]
    with pytest.raises(ValueError, match="outside its ROIs"):  # nothing to remove there
        session.add_point(far, positive=False)
    mask = session.add_point(far)
    assert not pred.is_zoomed(session.tiles[0]) and session.tiles[0].roi == pred.roi_at(s.centre)
    assert mask[s.dist <= 4.0].all() and mask[far]


def test_a_roi_set_by_the_caller_is_never_zoomed(lab):
    vol, s = _scene()
    pred, _ = _predictor(lab)
    session = InteractiveSession(pred)
    session.set_image(vol)
    session.set_roi_center(s.centre)
    session.add_point(s.centre)
    assert not pred.is_zoomed(session.tiles[0])


def test_leaving_the_zoom_recentres_only_when_the_first_roi_misses_the_click(lab):
    vol, s = _scene()
    pred, _ = _predictor(lab, extend=False)
    pred.set_image(vol)
    first = pred.predict_tile(pred.roi_at(s.centre), np.array([[16, 16, 16]]), np.array([1]))
    tile = pred.zoom_first_tile(first, s.centre, np.array([s.centre]), np.array([1]))
    assert pred.is_zoomed(tile)
    near, far = (60, 48, 48), (90, 48, 48)  # inside / outside the 2 mm ROI of the first click
    back = pred.leave_zoom(tile, near, np.array([s.centre, near]), np.array([1, 1]), first=s.centre)
    assert back.roi == pred.roi_at(s.centre)
    moved = pred.leave_zoom(tile, far, np.array([s.centre, far]), np.array([1, 1]), first=s.centre)
    assert moved.roi == pred.roi_at(far)


def test_enter_zoom_only_moves_a_small_main_lattice_tile_whose_zoomed_roi_holds_the_click(lab):
    vol, s = _scene()
    pred, model = _predictor(lab, extend=False)
    pred.set_image(vol)
    first = pred.predict_tile(pred.roi_at(s.centre), np.array([[16, 16, 16]]), np.array([1]))
    calls = model.decode_calls[:]
    zoomed = pred.enter_zoom(first, s.centre, (42, 48, 48))
    assert model.decode_calls == calls  # no model run: the logits are resampled
    assert zoomed is not None and pred.is_zoomed(zoomed)
    assert zoomed.roi.lattice.grid.spacing == (ZOOM,) * 3
    low = first.low_res_logits.shape[-1]
    want = resample_roi_logits(first.low_res_logits, first.roi, zoomed.roi, low)
    torch.testing.assert_close(zoomed.low_res_logits, want)
    # its mask is the same ball, on the finer ROI
    native = np.argwhere(s.dist <= 3.0)
    inside = zoomed.roi.native_to_roi(native.astype(np.float64)).round().astype(int)
    assert zoomed.mask[tuple(inside.T)].all()
    assert pred.enter_zoom(first, s.centre, (70, 48, 48)) is None  # outside the zoomed ROI
    assert pred.enter_zoom(zoomed, s.centre, (42, 48, 48)) is None  # zoomed already
    plain, _ = _predictor(lab, zoom=0.0, extend=False)
    plain.set_image(vol)
    tile = plain.predict_tile(plain.roi_at(s.centre), np.array([[16, 16, 16]]), np.array([1]))
    assert plain.enter_zoom(tile, s.centre, (42, 48, 48)) is None  # zoom-in off
    slab_vol, slab = _scene(slab=True)
    pred.set_image(slab_vol)
    wide = pred.predict_tile(pred.roi_at((60, 48, 48)), np.array([[16, 16, 16]]), np.array([1]))
    assert pred.enter_zoom(wide, (60, 48, 48), (60, 48, 48)) is None  # not small


# ----------------------------------------------------------------------------- rim edit


def _grow_model(lab):
    """The oracle at a first click; at a later positive click it grows the whole previous
    mask by 3 ROI voxels (the over-growth of a real model answering a click on the rim)."""

    class GrowModel(lab.OracleModel):
        def decode(self, emb, coords, labels, mask_input, multimask_output=False):
            later = mask_input is not None and bool((mask_input > 0).any())
            if not later or not bool(labels[0, -1] == 1):
                return super().decode(emb, coords, labels, mask_input, multimask_output)
            self.decode_calls.append({"coords": coords.clone(), "labels": labels.clone()})
            prev = self.upsample_logits(mask_input)[0, 0].numpy() > 0
            grown = ndimage.binary_dilation(prev, iterations=3)
            logits = np.where(grown, 10.0, -10.0).astype(np.float32)
            return torch.from_numpy(logits)[None, None], torch.ones(1, 1)

    return GrowModel(img_size=SIZE)


def _rim_session(lab, rim: float) -> tuple[InteractiveSession, SimpleNamespace]:
    vol, s = _scene()
    pred = SamMed3DPredictor(
        _grow_model(lab), target_spacing=(MAIN,) * 3, zoom_spacing=ZOOM, rim_edit=rim
    )
    session = InteractiveSession(pred, accumulate_clicks=True)
    session.set_image(vol)
    session.add_point(s.centre)
    assert pred.is_zoomed(session.tiles[0])
    return session, s


def test_a_positive_click_on_a_small_objects_rim_changes_it_only_near_the_click(lab):
    session, s = _rim_session(lab, rim=3.0)
    before = session.mask
    rim = (46, 48, 48)  # the ball's mask ends at i = 45: one voxel outside it
    assert not before[rim] and before[45, 48, 48]
    after = session.add_point(rim)
    assert after[rim] and (after | before).sum() == after.sum()  # nothing lost
    grid = np.indices(before.shape).transpose(1, 2, 3, 0)
    changed = np.argwhere(after != before)
    assert len(changed) > 0
    assert np.linalg.norm(changed - np.asarray(rim), axis=1).max() <= 3.0 + 1.0
    assert session.rule == "rim edit" and "3 mm" in (session.rule_note or "")
    far = np.linalg.norm(grid - np.asarray(rim), axis=-1) > 4.0
    np.testing.assert_array_equal(after[far], before[far])
    session.undo()
    np.testing.assert_array_equal(session.mask, before)


def test_without_the_rim_edit_or_off_the_rim_the_models_answer_is_taken(lab):
    session, s = _rim_session(lab, rim=0.0)
    before = session.mask
    after = session.add_point((46, 48, 48))
    assert after.sum() > 2 * before.sum() and session.rule is None  # the whole ball grew
    # a click two voxels from the mask is no rim click: the model's answer stands
    session, s = _rim_session(lab, rim=3.0)
    before = session.mask
    after = session.add_point((47, 48, 48))
    assert after.sum() > 2 * before.sum() and session.rule is None


def test_rim_edit_tile_takes_the_larger_logits_only_within_the_radius(lab):
    vol, s = _scene()
    pred = SamMed3DPredictor(
        lab.OracleModel(img_size=SIZE), target_spacing=(MAIN,) * 3, zoom_spacing=ZOOM
    )
    pred.set_image(vol)
    roi = pred._zoom_lattice.roi_at(s.centre, SIZE)
    low = torch.full((1, 1, SIZE, SIZE, SIZE), 5.0)
    tile = Tile.create(roi, low, np.ones((SIZE,) * 3, dtype=bool))
    prompt = torch.full_like(low, -5.0)
    assert pred.rim_edit_tile(tile, prompt, s.centre) is tile  # off (no checkpoint setting)
    pred.rim_edit = 3.0
    edited = pred.rim_edit_tile(tile, prompt, s.centre)
    centre = np.round(roi.native_to_roi(np.asarray(s.centre, dtype=np.float64))).astype(int)
    dist = np.linalg.norm(np.indices((SIZE,) * 3).transpose(1, 2, 3, 0) - centre, axis=-1)
    values = edited.low_res_logits[0, 0].numpy()  # 1 mm cells (low_res_factor 1)
    np.testing.assert_array_equal(values[dist <= 3.0], 5.0)
    np.testing.assert_array_equal(values[dist > 3.0], -5.0)
    np.testing.assert_array_equal(edited.mask, dist <= 3.0)
    with pytest.raises(ValueError, match="previous low-res logits"):
        pred.rim_edit_tile(tile, prompt[:, :, :4], s.centre)
    with pytest.raises(ValueError, match="rim_edit must be 0 .off. or a radius of at most 10"):
        SamMed3DPredictor(lab.OracleModel(img_size=SIZE), rim_edit=11.0)
