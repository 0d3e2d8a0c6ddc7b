"""Boundary refinement (sammed3d.inference.refine, the predictor and the session)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from sammed3d.evaluation.metrics import dice
from sammed3d.inference import InteractiveSession, SamMed3DPredictor
from sammed3d.inference.refine import _Layers, refine_boundary
from sammed3d.io import Volume


def _ball_scene(shape=(48, 48, 48), centre=(24, 24, 24), radius=9.0, seed=0):
    grid = np.indices(shape).transpose(1, 2, 3, 0).astype(np.float64)
    ball = np.linalg.norm(grid - np.asarray(centre, float), axis=-1) <= radius
    rng = np.random.default_rng(seed)
    image = np.where(ball, 200.0, 100.0) + rng.normal(0, 10, shape)
    return image.astype(np.float32), ball


def _blocky(mask: np.ndarray, cell: int) -> np.ndarray:
    """What a coarse grid makes of ``mask``: cells more than half inside, at full size."""
    s = mask.shape
    m = mask.reshape(s[0] // cell, cell, s[1] // cell, cell, s[2] // cell, cell)
    coarse = m.mean(axis=(1, 3, 5)) > 0.5
    return coarse.repeat(cell, 0).repeat(cell, 1).repeat(cell, 2)


def test_a_blocky_mask_snaps_to_the_intensity_boundary():
    image, ball = _ball_scene()
    coarse = _blocky(ball, 4)
    before = dice(coarse, ball)
    after = refine_boundary(image, coarse, 2, positive=[(24, 24, 24)])
    assert before < 0.93
    assert dice(after, ball) > 0.98


def test_an_anchored_band_stays_near_the_model_mask_and_a_free_one_follows_the_boundary():
    image, ball = _ball_scene(radius=12.0)
    grid = np.indices(ball.shape).transpose(1, 2, 3, 0)
    small = np.linalg.norm(grid - 24.0, axis=-1) <= 6.0
    # chessboard band: at most 2 voxels beyond the model's mask in every direction
    reach = np.linalg.norm(grid - 24.0, axis=-1) <= 6.0 + 2 * np.sqrt(3) + 1e-9
    anchored = refine_boundary(image, small, 2, positive=[(24, 24, 24)], iterations=4)
    assert anchored.sum() > small.sum() and not (anchored & ~reach).any()
    free = refine_boundary(image, small, 2, positive=[(24, 24, 24)], iterations=4, anchored=False)
    assert (free & ~reach).any()  # the band moved with the boundary
    assert dice(free, ball) > dice(anchored, ball) + 0.1


def test_empty_full_and_unsampled_masks_come_back_unchanged():
    image, ball = _ball_scene()
    empty = np.zeros_like(ball)
    assert not refine_boundary(image, empty, 2).any()
    full = np.ones_like(ball)
    assert refine_boundary(image, full, 2).all()
    nothing = np.zeros_like(ball)  # no voxel carries data: no histogram
    np.testing.assert_array_equal(refine_boundary(image, ball, 2, valid=nothing), ball)


def test_clicks_are_respected():
    image, ball = _ball_scene()
    mask = ball.copy()
    mask[40:44, 40:44, 40:44] = True  # a stray part (background intensity)
    out = refine_boundary(image, mask, 2, positive=[(24, 24, 24)])
    assert not out[40:44, 40:44, 40:44].any()  # only the clicked component stays
    # a positive click on a background voxel next to the mask stays inside
    edge = (24, 24, 34)
    assert not ball[edge]
    kept = refine_boundary(image, ball, 2, positive=[(24, 24, 24), edge])
    assert kept[edge]
    # a click beyond the reach of the mask changes nothing and is no error
    far = refine_boundary(image, ball, 2, positive=[(24, 24, 24), (2, 2, 2)], negative=[(45, 3, 3)])
    np.testing.assert_array_equal(far, refine_boundary(image, ball, 2, positive=[(24, 24, 24)]))
    # near a negative click the model's answer stands: a bite out of the ball stays out
    bitten = ball.copy()
    bitten[22:27, 22:27, 31:34] = False
    out = refine_boundary(image, bitten, 2, positive=[(24, 24, 24)], negative=[(24, 24, 32)])
    assert not out[24, 24, 31:34].any()
    healed = refine_boundary(image, bitten, 2, positive=[(24, 24, 24)])
    assert healed[24, 24, 31:33].all()  # without the click, intensity fills the bite


def test_layers_are_the_clipped_chessboard_distance_transform():
    """The grown layers read the same signed distance as scipy's transform, faces included."""
    rng = np.random.default_rng(3)
    for shape in ((20, 17, 23), (1, 12, 9), (9, 2, 11), (8, 10, 1)):
        ball = _ball_scene(shape, centre=rng.uniform(0, shape), radius=5.0)[1]
        for mask in (ball, rng.random(shape) < 0.3, ~ball):  # faces cut the ball
            d_in = ndimage.distance_transform_cdt(mask, metric="chessboard")
            d_out = ndimage.distance_transform_cdt(~mask, metric="chessboard")
            sd = d_in.astype(np.float32) - d_out.astype(np.float32)
            for width, far in ((1, 2), (3, 7)):
                layers = _Layers.of(np.ascontiguousarray(mask), width, far)
                for k in range(width + 1):
                    np.testing.assert_array_equal(layers.at_least[k], sd >= -k)
                    np.testing.assert_array_equal(layers.at_most[k], sd <= k)
                np.testing.assert_array_equal(layers.near, sd >= -far)
                np.testing.assert_array_equal(layers.band(), np.abs(sd) <= width)
                at = np.flatnonzero(layers.band())
                np.testing.assert_array_equal(layers.signed(at), sd.reshape(-1)[at])


def test_bad_arguments_raise():
    image, ball = _ball_scene()
    with pytest.raises(ValueError, match="one shape"):
        refine_boundary(image[:-1], ball, 2)
    with pytest.raises(ValueError, match="band >= 1"):
        refine_boundary(image, ball, 0)
    for bad in (2.5, True, np.float64(2.0)):  # band is in voxels, not mm
        with pytest.raises(ValueError, match="band must be a whole number of voxels"):
            refine_boundary(image, ball, bad)


# ------------------------------------------------------------------------ predictor, session


def _volume() -> tuple[Volume, np.ndarray]:
    image, ball = _ball_scene(shape=(64, 64, 64), centre=(30, 33, 31), radius=9.0)
    return Volume(image, (1.0, 1.0, 1.0)), ball


def test_predictor_refines_a_coarse_model_mask(lab):
    vol, ball = _volume()
    out = {}
    for width in (0.0, 2.0):
        model = lab.OracleModel(img_size=32, low_res_factor=4)  # 4-voxel cells: blocky
        pred = SamMed3DPredictor(model, target_spacing=(1.0,) * 3, refine_boundary=width)
        pred.set_image(vol)
        out[width] = pred.predict([[30, 33, 31]], [1]).mask
    assert dice(out[0.0], ball) < 0.95
    assert dice(out[2.0], ball) > 0.97
    assert out[2.0][30, 33, 31]


def test_session_masks_and_extents_are_refined(lab):
    vol, ball = _volume()
    model = lab.OracleModel(img_size=32, low_res_factor=4)
    pred = SamMed3DPredictor(model, target_spacing=(1.0,) * 3, refine_boundary=2.0)
    session = InteractiveSession(pred)
    session.set_image(vol)
    mask = session.add_point((30, 33, 31), True)
    assert dice(mask, ball) > 0.97
    np.testing.assert_array_equal(session.mask, mask)
