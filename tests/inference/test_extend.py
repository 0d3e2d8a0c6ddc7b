"""inference.extend: tiles, faces, extension prompts, breadth-first growth and stitching.

The geometry is real (a :class:`Lattice` of a small volume); the models are the oracle of
``tests/inference/conftest.py`` (segments the bright object under a click) and the registered
``sam_med3d_tiny`` network with weights set so that its mask is known (all or nothing).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from sammed3d import build_model
from sammed3d.inference import SamMed3DPredictor
from sammed3d.inference.extend import (
    Tile,
    deepest_voxel,
    descendants,
    extension_prompt,
    grow,
    stitch,
    touched_faces,
)
from sammed3d.inference.geometry import Lattice, RoiGrid
from sammed3d.io import Volume

S = 16  # ROI side of the hand-made tiles
L = 4  # their low-res side


def _lattice(shape=(64, 48, 40)) -> Lattice:
    """A lattice equal to a 1 mm native grid (same shape, no resampling)."""
    return Lattice.from_native(Volume(np.zeros(shape, np.float32), (1.0, 1.0, 1.0)), (1, 1, 1))


def _tile(roi: RoiGrid, mask: np.ndarray | None = None, low: torch.Tensor | None = None, **kw):
    mask = np.zeros(roi.size, bool) if mask is None else mask
    low = torch.zeros(1, 1, L, L, L) if low is None else low
    return Tile.create(roi, low, mask, **kw)


# --- Tile ------------------------------------------------------------------------------


def test_tile_keeps_its_mask_bit_packed():
    roi = _lattice().roi((8, 8, 8), S)
    mask = np.random.default_rng(0).random(roi.size) > 0.7
    tile = _tile(roi, mask)
    assert tile.packed_mask.nbytes == S**3 // 8
    np.testing.assert_array_equal(tile.mask, mask)
    assert tile.source == "prompt" and tile.parent is None
    with pytest.raises(ValueError, match=r"mask shape \(16, 16, 15\) != ROI size \(16, 16, 16\)"):
        _tile(roi, np.zeros((16, 16, 15), bool))


# --- touched_faces ---------------------------------------------------------------------


def test_a_face_counts_with_enough_mask_voxels_inside_the_image():
    lat = _lattice()
    roi = lat.roi((16, 16, 16), S)  # well inside: every face has image beyond it
    mask = np.zeros(roi.size, bool)
    mask[S - 1, 2:4, 2:6] = True  # 8 voxels on the high face of axis 0
    mask[3:5, 0, 7:10] = True  # 6 voxels on the low face of axis 1
    tile = _tile(roi, mask)
    assert touched_faces(tile, min_voxels=8) == [(0, 1)]
    assert touched_faces(tile, min_voxels=6) == [(0, 1), (1, -1)]
    assert touched_faces(tile, min_voxels=9) == []
    mask[S - 2, 1:-1, 1:-1] = True  # a plane one voxel inside the face touches nothing more
    assert touched_faces(_tile(roi, mask), min_voxels=8) == [(0, 1)]


def test_faces_on_the_image_border_never_count():
    lat = _lattice()
    full = np.ones((S, S, S), bool)
    at_origin = lat.roi((0, 0, 0), S)  # low faces are the image border
    assert touched_faces(_tile(at_origin, full)) == [(0, 1), (1, 1), (2, 1)]
    at_end = lat.roi((64 - S, 48 - S, 40 - S), S)  # high faces are the image border
    assert touched_faces(_tile(at_end, full)) == [(0, -1), (1, -1), (2, -1)]
    beyond = lat.roi((-4, 40, 30), S)  # hangs out of the image: low on 0, high on 1 and 2
    assert touched_faces(_tile(beyond, full)) == [(0, 1), (1, -1), (2, -1)]


def test_mask_voxels_in_the_padding_do_not_count():
    lat = _lattice()
    roi = lat.roi((16, -6, 16), S)  # ROI rows 0..5 of axis 1 are padding
    mask = np.zeros(roi.size, bool)
    mask[S - 1, 0:6, 0:8] = True  # 48 voxels on the high face of axis 0, all in the padding
    assert touched_faces(_tile(roi, mask)) == []
    mask[S - 1, 6, 0:8] = True  # 8 of them inside the image
    assert touched_faces(_tile(roi, mask)) == [(0, 1)]


# --- extension_prompt ------------------------------------------------------------------


@pytest.mark.parametrize("side", [1, -1])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_extension_prompt_shifts_logits_and_clicks_deep_in_the_overlap(axis, side):
    lat = _lattice()
    roi = lat.roi((24, 16, 12), S)
    low = torch.arange(L**3, dtype=torch.float32).reshape(1, 1, L, L, L) + 1.0
    mask = np.zeros(roi.size, bool)
    mask[4:12, 4:12, 4:12] = True  # a cube across the middle of the ROI
    new_roi, point, mask_input = extension_prompt(_tile(roi, mask, low), axis, side)

    step = [0, 0, 0]
    step[axis] = side * S // 2
    assert new_roi == roi.shifted(step)
    # the logits move with the ROI: the overlapping half is kept, the new half is "no prior"
    moved = torch.movedim(mask_input[0, 0], axis, 0)
    old = torch.movedim(low[0, 0], axis, 0)
    if side > 0:
        torch.testing.assert_close(moved[: L // 2], old[L // 2 :])
        assert not moved[L // 2 :].any()
    else:
        torch.testing.assert_close(moved[L // 2 :], old[: L // 2])
        assert not moved[: L // 2].any()
    # one click (int64, new ROI voxels) on the old mask, in the overlap
    assert point.shape == (1, 3) and point.dtype == np.int64
    old_voxel = point[0].copy()
    old_voxel[axis] += side * S // 2
    assert mask[tuple(old_voxel)]
    overlap = range(S // 2, S) if side > 0 else range(0, S // 2)
    assert old_voxel[axis] in overlap


def test_extension_prompt_needs_mask_in_the_overlap_and_whole_cells():
    lat = _lattice()
    roi = lat.roi((24, 16, 12), S)
    mask = np.zeros(roi.size, bool)
    mask[0:7, 4:8, 4:8] = True  # only in the low half
    with pytest.raises(ValueError, match="no voxel in the overlap"):
        extension_prompt(_tile(roi, mask), 0, 1)
    extension_prompt(_tile(roi, mask), 0, -1)  # the low half has it
    odd = Tile.create(roi, torch.zeros(1, 1, 5, 5, 5), mask)  # 8 voxels = 2.5 cells of 5
    with pytest.raises(ValueError, match="not a whole number of low-res cells"):
        extension_prompt(odd, 0, -1)


# --- deepest_voxel ---------------------------------------------------------------------


def test_deepest_voxel_is_near_the_centre_and_on_the_mask():
    grid = np.indices((24, 24, 24))
    centre = np.array([10, 13, 9])
    ball = sum((grid[a] - centre[a]) ** 2 for a in range(3)) <= 6**2
    whole = (slice(0, 24),) * 3
    best = deepest_voxel(ball, whole)
    assert best is not None and ball[tuple(best)]
    assert np.abs(best - centre).max() <= 1
    # restricted to a region: the answer is in it, in full-array indices
    region = (slice(12, 24), slice(0, 24), slice(0, 24))
    best = deepest_voxel(ball, region)
    assert best is not None and ball[tuple(best)] and best[0] >= 12
    assert best[0] <= 14  # deepest along the cut: close to the region's face nearest the centre
    assert deepest_voxel(ball, (slice(17, 24), slice(0, 24), slice(0, 24))) is None
    # a voxel the 2x subsampling misses is still found
    single = np.zeros((24, 24, 24), bool)
    single[5, 7, 9] = True
    np.testing.assert_array_equal(deepest_voxel(single, whole), [5, 7, 9])


# --- stitch and descendants ------------------------------------------------------------


def test_stitch_takes_each_voxel_from_the_nearest_roi_centre():
    lat = _lattice()
    a = lat.roi((8, 8, 8), S)
    b = a.shifted((S // 2, 0, 0))
    union, out = stitch([_tile(a, np.ones(a.size, bool)), _tile(b, np.zeros(b.size, bool))])
    assert union.start == (8, 8, 8) and union.size == (S + S // 2, S, S)
    # centres at union rows 7.5 and 15.5: rows 0..11 are nearer a, rows 12..23 nearer b
    assert out[:12].all() and not out[12:].any()
    union, out = stitch([_tile(b, np.zeros(b.size, bool)), _tile(a, np.ones(a.size, bool))])
    assert out[:12].all() and not out[12:].any()  # the order of the tiles does not matter
    one = _tile(a, np.eye(S, dtype=bool)[:, :, None] & np.ones((1, 1, S), bool))
    union, out = stitch([one])
    assert union == a
    np.testing.assert_array_equal(out, one.mask)
    with pytest.raises(ValueError, match="at least one tile"):
        stitch([])


def _stitch_by_distance(tiles):
    """Stitching as first written (each tile overwrites the voxels it is strictly nearer
    to): the reference for the cached ownership of :func:`stitch`."""
    lo = np.min([t.roi.start for t in tiles], axis=0)
    hi = np.max([t.roi.stop for t in tiles], axis=0)
    best = np.full(hi - lo, np.inf, np.float32)
    out = np.zeros(hi - lo, bool)
    for t in tiles:
        sl = tuple(
            slice(s - u, s - u + n) for s, u, n in zip(t.roi.start, lo, t.roi.size, strict=True)
        )
        axes = [(np.arange(n, dtype=np.float32) - (n - 1) / 2) ** 2 for n in t.roi.size]
        dist = axes[0][:, None, None] + axes[1][None, :, None] + axes[2][None, None, :]
        closer = dist < best[sl]
        best[sl][closer] = dist[closer]
        out[sl][closer] = t.mask[closer]
    return out


def test_stitch_equals_the_nearest_centre_rule_on_random_layouts():
    lat = _lattice((80, 80, 80))
    rng = np.random.default_rng(7)
    for _ in range(40):
        seed = lat.roi(tuple(int(v) for v in rng.integers(0, 40, 3)), S)
        rois = [seed]
        for _ in range(int(rng.integers(1, 6))):  # half-ROI steps, as grown, and odd ones
            step = (S // 2) if rng.random() < 0.7 else int(rng.integers(1, S))
            delta = [0, 0, 0]
            delta[int(rng.integers(3))] = step * int(rng.choice([-1, 1]))
            moved = rois[int(rng.integers(len(rois)))].shifted(delta)
            if moved not in rois:
                rois.append(moved)
        tiles = [_tile(r, rng.random(r.size) < 0.5) for r in rois]
        union, out = stitch(tiles)
        assert union.start == tuple(np.min([r.start for r in rois], axis=0))
        np.testing.assert_array_equal(out, _stitch_by_distance(tiles))
        # the same layout again (its ownership is cached) with other masks
        tiles = [_tile(r, rng.random(r.size) < 0.5) for r in rois]
        np.testing.assert_array_equal(stitch(tiles)[1], _stitch_by_distance(tiles))


def test_descendants_follow_the_parent_chain():
    lat = _lattice()
    a = lat.roi((16, 16, 16), S)
    b, c = a.shifted((8, 0, 0)), a.shifted((16, 0, 0))
    x, y = a.shifted((0, 8, 0)), a.shifted((0, 0, 8))
    tiles = [
        _tile(a),
        _tile(b, source="extension", parent=a),
        _tile(c, source="extension", parent=b),
        _tile(x),  # prompted: never a descendant
        _tile(y, source="extension", parent=x),
    ]
    assert descendants(tiles, a) == {b, c}
    assert descendants(tiles, b) == {c}
    assert descendants(tiles, c) == set()
    assert descendants(tiles, x) == {y}
    looped = [*tiles, _tile(a, source="extension", parent=c)]  # a cycle ends
    assert descendants(looped, a) == {b, c}


# --- grow with the oracle model --------------------------------------------------------


def _rod(lab):
    """The rod of ``lab.make_rod`` (3 mm lattice, 32-voxel ROIs) in an oracle predictor."""
    vol, rod, radial = lab.make_rod()
    model = lab.OracleModel(img_size=32)
    predictor = SamMed3DPredictor(model, target_spacing=(3.0, 3.0, 3.0), extend=False)
    predictor.set_image(vol)
    return predictor, model, rod, radial


def _seed(predictor: SamMed3DPredictor, ijk=(30, 7, 7)) -> Tile:
    roi = predictor.roi_at(ijk)
    vox = roi.native_points_to_voxels(np.asarray([ijk], dtype=np.float64))
    return predictor.predict_tile(roi, vox, np.ones(1, np.int64))


def test_grow_follows_the_object_and_prompts_each_roi_from_its_parent(lab):
    predictor, model, rod, radial = _rod(lab)
    seed = _seed(predictor)
    calls = []

    def run(roi, points, labels, mask_input, parent):
        calls.append((roi, points.copy(), labels.copy(), mask_input.clone(), parent))
        return predictor.predict_tile(
            roi, points, labels, mask_input, source="extension", parent=parent
        )

    grown = grow(run, seed, max_new=20)
    assert len(grown) >= 3 and len(grown) == len(calls)
    by_roi = {t.roi: t for t in (seed, *grown)}
    assert len(by_roi) == len(grown) + 1  # no ROI twice
    for tile, (roi, points, labels, mask_input, parent) in zip(grown, calls, strict=True):
        assert tile.roi == roi and tile.source == "extension" and tile.parent == parent
        delta = np.subtract(roi.start, parent.start)
        assert sorted(np.abs(delta).tolist()) == [0, 0, 16]  # half a ROI along one axis
        assert delta[1] == delta[2] == 0  # the rod runs along lattice axis 0 only
        assert labels.tolist() == [1]
        # the click is on the parent's mask, seen from the new ROI
        on_parent = points[0] + delta
        assert by_roi[parent].mask[tuple(on_parent)]
        # the mask prompt is the parent's logits, moved by half a ROI
        _, _, expected = extension_prompt(by_roi[parent], 0, int(np.sign(delta[0])))
        torch.testing.assert_close(mask_input, expected)
    # stitched, the tiles cover the whole rod and nothing far from it
    slices, block = predictor.native_block([seed, *grown])
    mask = np.zeros(rod.shape, bool)
    mask[slices] = block
    assert mask[rod & (radial <= 5.0)].all()
    assert not mask[radial > 13.0].any()
    one_roi = np.zeros(rod.shape, bool)
    slices, block = predictor.native_block([seed])
    one_roi[slices] = block
    assert one_roi.sum() < 0.5 * rod.sum()  # one ROI alone cuts the rod


def test_grow_respects_the_bound_existing_rois_and_drops_empty_tiles(lab, caplog):
    predictor, _, _, _ = _rod(lab)
    seed = _seed(predictor)

    def run(roi, points, labels, mask_input, parent):
        return predictor.predict_tile(
            roi, points, labels, mask_input, source="extension", parent=parent
        )

    everything = grow(run, seed, max_new=20)
    with caplog.at_level(logging.INFO, logger="sammed3d.inference.extend"):
        assert len(grow(run, seed, max_new=1)) == 1
    assert "reached its ROI budget (1 new ROI(s) allowed" in caplog.text
    first = everything[0].roi
    tried = []

    def recording(roi, *args):
        tried.append(roi)
        return run(roi, *args)

    rest = grow(recording, seed, existing=[first], max_new=20)
    assert first not in tried and first not in {t.roi for t in rest}

    def empty(roi, points, labels, mask_input, parent):
        tried.append(roi)
        return Tile.create(roi, mask_input, np.zeros(roi.size, bool), "extension", parent)

    tried.clear()
    assert grow(empty, seed, max_new=20) == []
    assert tried  # the neighbours were predicted, found empty and dropped


def test_extend_tile_counts_the_objects_rois_against_max_rois(lab):
    predictor, _, _, _ = _rod(lab)
    seed = _seed(predictor)
    predictor.max_rois = 20
    grown = predictor.extend_tile(seed)
    assert len(grown) >= 3
    predictor.max_rois = 3
    assert len(predictor.extend_tile(seed)) == 2  # seed + 2
    assert len(predictor.extend_tile(seed, existing=[seed.roi])) == 2  # seed counted once
    other = grown[-1].roi
    assert len(predictor.extend_tile(seed, existing=[seed.roi, other])) == 1
    assert predictor.extend_tile(seed, existing=[grown[0].roi, grown[1].roi, other]) == []


# --- extend_tile with the registered tiny network ---------------------------------------


def _tiny_with_constant_mask(sign: float) -> torch.nn.Module:
    """``sam_med3d_tiny`` whose every mask logit is ``sign * const``: all weights 0, the last
    upscaling bias 1 (every feature GELU(1)) and the hypernetwork's output bias ``sign``."""
    model = build_model("sam_med3d_tiny")
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.mask_decoder.output_upscaling[3].bias.fill_(1.0)
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].bias.fill_(sign)
    return model


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["full", "empty"])
def test_extend_tile_with_the_tiny_network(sign):
    model = _tiny_with_constant_mask(sign)
    decoded = []
    decode = model.decode

    def recording_decode(emb, coords, labels, mask_input, **kw):
        decoded.append((coords.clone(), labels.clone(), mask_input.clone()))
        return decode(emb, coords, labels, mask_input, **kw)

    model.decode = recording_decode
    img = np.random.default_rng(0).uniform(50, 60, (150, 64, 64)).astype(np.float32)
    predictor = SamMed3DPredictor(model, target_spacing=(1.0, 1.0, 1.0), max_rois=10)
    predictor.set_image(img, spacing=(1.0, 1.0, 1.0))
    seed = _seed(predictor, (75, 31, 32))  # lattice voxel (74, 32, 32): ROI start (42, 0, 0)
    assert seed.mask.all() if sign > 0 else not seed.mask.any()
    grown = predictor.extend_tile(seed)
    if sign < 0:
        assert grown == [] and len(decoded) == 1  # nothing touches a face: no extension
        return
    # 64-voxel ROIs on a 150 x 64 x 64 lattice: only axis 0 has image beyond the faces.
    # Breadth-first from the seed (start s): s - 32 and s + 32, then one more on each side;
    # those reach the image border and stop there
    s = 42
    assert seed.roi.start == (s, 0, 0)
    starts = [t.roi.start[0] for t in grown]
    assert starts == [s - 32, s + 32, s - 64, s + 64]
    assert all(t.roi.start[1:] == (0, 0) for t in grown)
    assert [t.parent.start[0] for t in grown] == [s, s, s - 32, s + 32]
    assert len(decoded) == 5
    for (coords, labels, mask_input), tile in zip(decoded[1:], grown, strict=True):
        assert coords.shape == (1, 1, 3) and labels.tolist() == [[1]]
        assert mask_input.shape == (1, 1, 16, 16, 16)  # the tiny network's low-res logits
        # the parent's logits moved by half a ROI: the half towards the parent is kept
        kept, fresh = (slice(8, 16), slice(0, 8))
        if tile.roi.start[0] > tile.parent.start[0]:
            kept, fresh = fresh, kept
        assert (mask_input[0, 0, kept] > 0).all() and not mask_input[0, 0, fresh].any()
    slices, block = predictor.native_block([seed, *grown])
    assert block.shape == (150, 64, 64) and block.all()  # the whole image, stitched


def test_native_block_hugs_the_mask_and_pastes_what_the_whole_roi_would(lab):
    from sammed3d.inference import extend as _extend

    predictor, _, rod, _ = _rod(lab)
    seed = _seed(predictor)
    union, stitched = _extend.stitch([seed])
    slices, block = predictor.native_block([seed])
    whole_slices, whole = union.paste_to_native(stitched)  # every native voxel of the ROI
    assert block.size < whole.size  # a rod through part of the ROI: a smaller box
    for axis in range(3):  # the box is the mask's own: True voxels on each of its faces
        assert block.any(axis=tuple(a for a in range(3) if a != axis))[[0, -1]].all()
    mine, ref = np.zeros(rod.shape, bool), np.zeros(rod.shape, bool)
    mine[slices] = block
    ref[whole_slices] = whole
    assert ref.any() and np.array_equal(mine, ref)
