"""``train.dice_fall_weight``: a hinge on a later click's soft Dice falling below the previous
click's (``losses.soft_dice`` / ``losses.dice_fall_penalty``)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sammed3d import build_model
from sammed3d.training.config import ConfigError, TrainingConfig, validate_config
from sammed3d.training.interaction import ClickLoop
from sammed3d.training.losses import dice_fall_penalty, soft_dice

from .conftest import dense_click_loop


def _target() -> torch.Tensor:
    t = torch.zeros(2, 1, 8, 8, 8)
    t[0, 0, 2:6, 2:6, 2:6] = 1.0
    t[1, 0, 3:5, 1:7, 2:4] = 0.5  # area fractions are allowed
    return t


def test_soft_dice_is_the_squared_denominator_formula():
    target = _target()
    logits = torch.randn(2, 1, 8, 8, 8, generator=torch.Generator().manual_seed(3))
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    smooth = 1e-5  # MONAI's smooth_nr = smooth_dr
    expected = (2 * (p * t).sum(1) + smooth) / ((p**2).sum(1) + (t**2).sum(1) + smooth)
    torch.testing.assert_close(soft_dice(logits, target), expected)
    with pytest.raises(ValueError, match="same shape"):
        soft_dice(logits, target[:, :, :4])


def test_fall_penalty_counts_only_falls():
    target = _target()
    good = torch.where(target > 0, 8.0, -8.0)
    bad = torch.full_like(target, -8.0)  # empty: soft Dice near 0
    d_good, d_bad = soft_dice(good, target), soft_dice(bad, target)
    assert (d_good > 0.75).all() and (d_bad < 0.01).all()  # 0.8 on the half-filled cells
    penalty, after = dice_fall_penalty(bad, target, d_good)
    assert math.isclose(float(penalty), float((d_good - d_bad).mean()), rel_tol=1e-6)
    assert not after.requires_grad
    no_fall, _ = dice_fall_penalty(good, target, d_bad)  # a click that made it better
    assert float(no_fall) == 0.0
    # one sample falls, the other rises: only the fall counts, averaged over the batch
    mixed = torch.cat([bad[:1], good[1:]])
    before = torch.stack([d_good[0], d_bad[1]])
    penalty, _ = dice_fall_penalty(mixed, target, before)
    assert math.isclose(float(penalty), float(d_good[0] - d_bad[0]) / 2, rel_tol=1e-6)


def _loop(weight: float) -> ClickLoop:
    return dense_click_loop(dice_fall_weight=weight)


def test_click_loop_adds_the_weighted_hinge_of_each_fall():
    """The decoder's outputs are made known: click 1 the target, click 2 empty (a fall),
    click 3 the target again (a rise). The loss grows by weight x (click 1's soft Dice -
    click 2's) and nothing for click 3."""
    image = torch.randn(2, 1, 64, 64, 64, generator=torch.Generator().manual_seed(0))
    label = torch.zeros(2, 1, 64, 64, 64)
    label[0, 0, 20:44, 18:40, 22:46] = 1
    label[1, 0, 26:34, 28:36, 24:40] = 1
    target = F.avg_pool3d(label, 2)  # the tiny model's 32^3 logit grid, area fractions
    designs = [torch.where(target > 0.5, 6.0, -6.0), torch.full_like(target, -6.0)]
    designs.append(designs[0])

    def run(weight: float) -> float:
        loop = _loop(weight)
        original = loop.model.decode
        calls = iter(designs)

        def decode(emb, coords, labels, prev, multimask_output=False):
            logits, iou = original(emb, coords, labels, prev, multimask_output=multimask_output)
            return logits * 0 + next(calls), iou

        loop.model.decode = decode  # type: ignore[method-assign]
        with torch.no_grad():
            return float(loop(image, label, torch.tensor([1, 2]), mask_only=[])["loss"])

    fall = float((soft_dice(designs[0], target) - soft_dice(designs[1], target)).mean())
    assert fall > 0.5
    base = run(0.0)
    assert math.isclose(run(2.0) - base, 2.0 * fall, rel_tol=1e-4)


def test_dice_fall_option_errors():
    model = build_model("sam_med3d_tiny_dense")
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="dice_fall_weight must be a finite number"):
            ClickLoop(model, loss_resolution="low", dice_fall_weight=bad)
    with pytest.raises(ValueError, match="loss_resolution='low'"):
        ClickLoop(model, loss_resolution="full", dice_fall_weight=1.0)
    cfg = TrainingConfig()  # published regime: loss at full resolution
    cfg.train.dice_fall_weight = 1.0
    with pytest.raises(ConfigError, match="dice_fall_weight > 0 needs"):
        validate_config(cfg)
    cfg.train.dice_fall_weight = -0.5
    with pytest.raises(ConfigError, match="finite number >= 0"):
        validate_config(cfg)
