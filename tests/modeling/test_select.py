"""Choosing among the multimask outputs: stability score and the first-click rule."""

from __future__ import annotations

import pytest
import torch

from sammed3d.modeling import select_by_iou, select_first_click_mask, stability_score


def _masks() -> torch.Tensor:
    sharp = torch.full((1, 1, 8, 8, 8), -10.0)
    sharp[..., 2:6, 2:6, 2:6] = 10.0  # 64 voxels at both thresholds
    blurry = torch.full((1, 1, 8, 8, 8), -10.0)
    blurry[..., 1:7, 1:7, 1:7] = 0.5  # 216 voxels above -1, none above +1
    blurry[..., 3:5, 3:5, 3:5] = 2.0  # 8 of them above +1
    empty = torch.full((1, 1, 8, 8, 8), -10.0)
    return torch.cat([sharp, blurry, empty], dim=1)


def test_stability_score_is_the_iou_of_the_two_thresholds():
    score = stability_score(_masks())
    torch.testing.assert_close(score, torch.tensor([[1.0, 8 / 216, 0.0]]))


def test_first_click_rule_weighs_predicted_iou_by_stability():
    logits = _masks()
    iou = torch.tensor([[0.5, 0.9, 1.0]])
    chosen, chosen_iou = select_first_click_mask(logits, iou)
    torch.testing.assert_close(chosen, logits[:, :1])  # 0.5 x 1 beats 0.9 x 0.04 and 1 x 0
    torch.testing.assert_close(chosen_iou, torch.tensor([[0.5]]))
    by_iou, _ = select_by_iou(logits, iou)  # the IoU head alone takes the empty mask
    torch.testing.assert_close(by_iou, logits[:, 2:3])


@pytest.mark.parametrize("select", [select_by_iou, select_first_click_mask])
def test_selection_shape_errors(select):
    with pytest.raises(ValueError, match=r"iou must be \(B, M\) = \(1, 3\)"):
        select(_masks(), torch.zeros(1, 2))
