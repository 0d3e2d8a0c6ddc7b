"""``train.choose_extent_fraction``: the second click refines the first-click output closest to
the target (a person who took another extent) instead of the IoU head's pick."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sammed3d import build_model
from sammed3d.training.config import ConfigError, TrainingConfig, validate_config
from sammed3d.training.interaction import ClickLoop

from .conftest import dense_click_loop


def _loop(fraction: float) -> ClickLoop:
    return dense_click_loop(2, first_click_multimask=True, choose_extent_fraction=fraction)


def _spy(
    loop: ClickLoop, target: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Records each decode. The first click's three outputs are made known: a cube inside the
    target, the target, everything; the IoU head ranks "everything" first, so its pick and
    the output closest to the target (the target) differ."""
    calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    original = loop.model.decode

    def spy(emb, coords, labels, prev, multimask_output=False):
        logits, iou = original(emb, coords, labels, prev, multimask_output=multimask_output)
        if multimask_output:
            inside = torch.zeros_like(target)
            inside[..., 14:18, 14:18, 14:18] = 1.0
            designed = torch.cat([inside, target, torch.ones_like(target)], dim=1)
            logits = logits * 0 + torch.where(designed > 0.5, 5.0, -5.0)
            iou = iou * 0 + torch.tensor([[0.1, 0.2, 0.9]])
        calls.append((prev.clone(), logits.detach().clone(), iou.detach().clone()))
        return logits, iou

    loop.model.decode = spy  # type: ignore[method-assign]
    return calls


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.randn(2, 1, 64, 64, 64, generator=torch.Generator().manual_seed(0))
    label = torch.zeros(2, 1, 64, 64, 64)
    label[0, 0, 20:44, 18:40, 22:46] = 1
    label[1, 0, 26:34, 28:36, 24:40] = 1
    return image, label


def _iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    pred, gt = logits > 0, target > 0.5
    inter = (pred & gt).flatten(2).sum(-1).float()
    union = (pred | gt).flatten(2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_second_click_refines_the_closest_output_or_the_pick(fraction):
    loop = _loop(fraction)
    image, label = _data()
    target = F.avg_pool3d(label, 2)  # the tiny model's 32^3 logit grid, area fractions
    calls = _spy(loop, target)
    with torch.no_grad():
        out = loop(image, label, torch.tensor([1, 2]), mask_only=[])
    (_, outputs, iou_pred), (prompt, _, _) = calls[0], calls[1]
    assert outputs.shape[1] == 3  # the first click decodes the multimask outputs
    iou_true = _iou(outputs, target)
    index = iou_true.argmax(1) if fraction else iou_pred.argmax(1)
    assert iou_true.argmax(1).tolist() == [1, 1] and iou_pred.argmax(1).tolist() == [2, 2]
    for b in range(2):
        assert torch.equal(prompt[b, 0], outputs[b, index[b]])
    # the logged click-1 Dice is the IoU head's pick either way
    picked = outputs[torch.arange(2), iou_pred.argmax(1)][:, None] > 0
    gt = target > 0.5
    dice = 2 * (picked & gt).flatten(1).sum(1) / (picked.flatten(1).sum(1) + gt.flatten(1).sum(1))
    torch.testing.assert_close(out["dice_per_sample"][:, 0], dice.float())


def test_choose_extent_option_errors():
    model = build_model("sam_med3d_tiny_dense")
    with pytest.raises(ValueError, match="choose_extent_fraction must be in"):
        ClickLoop(model, loss_resolution="low", first_click_multimask=True,
                  choose_extent_fraction=1.5)  # fmt: skip
    with pytest.raises(ValueError, match="first_click_multimask"):
        ClickLoop(model, loss_resolution="low", choose_extent_fraction=0.5)
    cfg = TrainingConfig()
    cfg.train.choose_extent_fraction = 0.5
    with pytest.raises(ConfigError, match="choose_extent_fraction"):
        validate_config(cfg)
