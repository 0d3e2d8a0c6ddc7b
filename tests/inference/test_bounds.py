"""Click bounds (sammed3d.inference.bounds, the session): a later click moves the mask only in
its own direction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from sammed3d.config import ModelConfig
from sammed3d.inference import InteractiveSession, SamMed3DPredictor
from sammed3d.inference.bounds import MaskBound, bound_logits, bounds_click
from sammed3d.io import Volume

SIZE = 32


def _block(shape, *boxes):
    block = np.zeros(shape, dtype=bool)
    for box in boxes:
        block[box] = True
    return block


# ------------------------------------------------------------------------ pure functions


def test_a_cap_keeps_the_intersection_without_the_clicked_voxel_on_its_own_box():
    # the bound: native box [10, 20)^3 full; the new mask: [15, 30)^3 full
    bound = MaskBound.of(True, (slice(10, 20),) * 3, np.ones((10, 10, 10), bool), (16, 16, 16))
    slices, block = bound.apply((slice(15, 30),) * 3, np.ones((15, 15, 15), bool))
    assert slices == (slice(15, 20),) * 3 and block.shape == (5, 5, 5)
    assert not block[1, 1, 1] and block.sum() == 5**3 - 1  # (16, 16, 16) cleared
    # boxes that do not meet: an empty mask on the slices it came with
    slices, block = bound.apply((slice(40, 44),) * 3, np.ones((4, 4, 4), bool))
    assert slices == (slice(40, 44),) * 3 and not block.any() and block.shape == (4, 4, 4)


def test_a_floor_keeps_the_union_on_the_box_of_both():
    old = _block((4, 4, 4), (slice(0, 2), slice(0, 2), slice(0, 2)))
    bound = MaskBound.of(False, (slice(10, 14),) * 3, old)
    new = np.ones((2, 2, 2), bool)
    slices, block = bound.apply((slice(20, 22), slice(10, 12), slice(10, 12)), new)
    assert slices == (slice(10, 22), slice(10, 12), slice(10, 12))
    full = np.zeros((40, 40, 40), bool)
    full[slices] = block
    expected = np.zeros_like(full)
    expected[10:12, 10:12, 10:12] = True
    expected[20:22, 10:12, 10:12] = True
    np.testing.assert_array_equal(full, expected)
    # the bound survives packing: an odd number of voxels
    odd = np.random.default_rng(0).random((3, 5, 7)) > 0.5
    np.testing.assert_array_equal(
        MaskBound.of(True, (slice(0, 3), slice(0, 5), slice(0, 7)), odd).block(), odd
    )


def test_bad_bounds_are_one_line_errors():
    with pytest.raises(ValueError, match="does not fill slices"):
        MaskBound.of(True, (slice(0, 3),) * 3, np.ones((2, 3, 3), bool))
    with pytest.raises(ValueError, match="only a cap"):
        MaskBound.of(False, (slice(0, 3),) * 3, np.ones((3, 3, 3), bool), (1, 1, 1))
    with pytest.raises(ValueError, match="prompt must have the shape of the logits"):
        bound_logits(torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 1, 8, 8, 8), True)


def test_bound_logits_and_which_clicks_are_bounded():
    old = torch.tensor([[-1.0, 2.0]]).reshape(1, 1, 1, 1, 2)
    new = torch.tensor([[3.0, -4.0]]).reshape(1, 1, 1, 1, 2)
    assert bound_logits(old, new, True).flatten().tolist() == [3.0, 2.0]
    assert bound_logits(old, new, False).flatten().tolist() == [-1.0, -4.0]
    assert [bounds_click(b, p) for b in ("none", "negative", "both") for p in (True, False)] == [
        False, False, False, True, True, True,
    ]  # fmt: skip


def test_the_setting_is_checked_and_taken_from_the_checkpoint(lab):
    with pytest.raises(ValueError, match="click_bounds must be one of none, negative, both"):
        ModelConfig(click_bounds="yes")
    with pytest.raises(ValueError, match="click_bounds must be one of"):
        SamMed3DPredictor(lab.OracleModel(img_size=SIZE), click_bounds="positive")
    model = lab.OracleModel(img_size=SIZE)
    assert SamMed3DPredictor(model).click_bounds == "none"
    model.config = ModelConfig(click_bounds="both")
    assert SamMed3DPredictor(model).click_bounds == "both"
    assert SamMed3DPredictor(model, click_bounds="none").click_bounds == "none"


# ------------------------------------------------------------------------------ session


def _wrong_way_model(lab):
    """The oracle at a first click; at a later click it moves the whole previous mask the
    wrong way: grown by 2 ROI voxels at a negative click, shrunk by 2 at a positive one."""

    class WrongWay(lab.OracleModel):
        def decode(self, emb, coords, labels, mask_input, multimask_output=False):
            if mask_input is None or not bool((mask_input > 0).any()):
                return super().decode(emb, coords, labels, mask_input, multimask_output)
            prev = self.upsample_logits(mask_input)[0, 0].numpy() > 0
            if bool(labels[0, -1] == 1):
                out = ndimage.binary_erosion(prev, iterations=2)
            else:
                out = ndimage.binary_dilation(prev, iterations=2)
            logits = np.where(out, 10.0, -10.0).astype(np.float32)
            return torch.from_numpy(logits)[None, None], torch.ones(1, 1)

    return WrongWay(img_size=SIZE)


def _session(lab, bounds: str):
    """A bright ball (radius 8 mm) at 1 mm, its first click at the centre."""
    grid = np.indices((64, 64, 64)).transpose(1, 2, 3, 0)
    ball = np.linalg.norm(grid - 32, axis=-1) <= 8.0
    img = np.where(ball, 300.0, 100.0) + np.random.default_rng(0).uniform(0, 8, ball.shape)
    pred = SamMed3DPredictor(_wrong_way_model(lab), target_spacing=(1.0,) * 3, click_bounds=bounds)
    session = InteractiveSession(pred, accumulate_clicks=True)
    session.set_image(Volume(img.astype(np.float32), (1.0, 1.0, 1.0)))
    first = session.add_point((32, 32, 32))
    assert first.sum() > 1000
    return session, first


def test_a_negative_click_never_adds_to_the_mask_with_bounds_on(lab):
    session, before = _session(lab, "negative")
    after = session.add_point((38, 32, 32), positive=False)
    assert not (after & ~before).any() and not after[38, 32, 32]
    assert after.sum() == before.sum() - 1  # the model's growth cut back to the old mask
    session.undo()
    np.testing.assert_array_equal(session.mask, before)
    session.redo()
    np.testing.assert_array_equal(session.mask, after)
    # a positive click is not bounded under "negative": the model's shrink is taken
    shrunk = session.add_point((32, 32, 32))
    assert shrunk.sum() < after.sum() and (after & ~shrunk).any()


def test_with_both_a_positive_click_never_removes_and_off_the_model_is_taken(lab):
    session, before = _session(lab, "both")
    after = session.add_point((33, 32, 32))
    np.testing.assert_array_equal(after, before)  # the model shrank it: the floor holds it
    session, before = _session(lab, "none")
    grown = session.add_point((38, 32, 32), positive=False)
    assert grown.sum() > before.sum() and grown[38, 32, 32]


def test_the_rules_in_effect_are_summed_up_in_one_line(lab):
    model = lab.OracleModel(img_size=SIZE)
    model.config = ModelConfig(refine_boundary=3.0, rim_edit=3.0, contrast_guard=0.4)
    line = SamMed3DPredictor(model, click_bounds="negative").rules_summary()
    assert line == (
        "zoom-in off, boundary refinement 3 mm, contrast guard 0.4, first pick model, "
        "later check none, rim edit 3 mm, click bounds negative"
    )
    assert "\n" not in line
