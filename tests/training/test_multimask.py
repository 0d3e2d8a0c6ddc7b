"""Training the multimask outputs at the first click: seeding, the min-over-masks loss, the
click loop and the trainer option (``train.first_click_multimask``)."""

from __future__ import annotations

import pytest
import torch

from sammed3d import build_model
from sammed3d.build import load_checkpoint, model_config_of, save_checkpoint
from sammed3d.training.interaction import ClickLoop
from sammed3d.training.losses import build_seg_loss
from sammed3d.training.multimask import (
    multimask_first_click_loss,
    per_sample_loss,
    seed_multimask_outputs,
)
from sammed3d.training.trainer import never_trained_parameters

S = 64


def _box_target(n: int = 2, size: int = 16) -> torch.Tensor:
    target = torch.zeros(n, 1, size, size, size)
    target[:, :, 4:10, 4:10, 4:10] = 1
    return target


def test_seeded_outputs_start_close_to_mask_0():
    torch.manual_seed(0)
    model = build_model("sam_med3d_tiny_dense")
    emb = model.encode(torch.randn(1, 1, S, S, S))
    coords, labels = torch.tensor([[[30.0, 31.0, 29.0]]]), torch.tensor([[1]])
    with torch.no_grad():
        single, _ = model.decode(emb, coords, labels, None)
        before, _ = model.decode(emb, coords, labels, None, multimask_output=True)
        seed_multimask_outputs(model, torch.Generator().manual_seed(1))
        # mask 0 itself moves a little: the output tokens attend to each other
        single, _ = model.decode(emb, coords, labels, None)
        after, _ = model.decode(emb, coords, labels, None, multimask_output=True)
    far_before = (before - single).abs().mean(dim=(2, 3, 4))
    far_after = (after - single).abs().mean(dim=(2, 3, 4))
    assert far_after.max() < 0.2 * far_before.min()  # near-copies of mask 0 ...
    assert (after[:, 0] != after[:, 1]).any()  # ... that differ from each other


def test_loss_backpropagates_only_the_closest_mask_and_regresses_iou():
    target = _box_target(2)
    good = torch.where(target > 0, 8.0, -8.0)  # (2, 1, ...): the target itself
    bad = torch.full_like(good, -8.0)  # empty
    half = good.clone()
    half[:, :, 4:7] = -8.0  # half the box
    # sample 0: mask 1 is right; sample 1: mask 2 is right
    logits = torch.cat([torch.cat([bad, good, half], 1)[:1], torch.cat([half, bad, good], 1)[1:]])
    logits.requires_grad_(True)
    iou_pred = torch.tensor([[0.1, 0.2, 0.9], [0.0, 0.0, 1.0]], requires_grad=True)
    loss_fn = build_seg_loss()
    loss, chosen, iou_true = multimask_first_click_loss(loss_fn, logits, iou_pred, target)
    torch.testing.assert_close(iou_true, torch.tensor([[0.0, 1.0, 0.5], [0.5, 0.0, 1.0]]))
    best = per_sample_loss(loss_fn, good, target).mean()
    iou_term = ((iou_pred.detach() - iou_true) ** 2).mean()
    torch.testing.assert_close(loss, best + iou_term)
    # the IoU head's ranking, not the oracle, picks what the next click sees
    torch.testing.assert_close(chosen[0], half[0])
    torch.testing.assert_close(chosen[1], good[1])
    loss.backward()
    moved = logits.grad.abs().sum(dim=(2, 3, 4)) > 0
    assert moved.tolist() == [[False, True, False], [False, False, True]]
    assert iou_pred.grad is not None and iou_pred.grad.abs().sum() > 0


@pytest.mark.parametrize("resolution", ["low", "full"])
def test_click_loop_trains_the_iou_head_and_all_outputs(resolution):
    torch.manual_seed(0)
    model = build_model("sam_med3d_tiny_dense").train()
    for name in never_trained_parameters(model, first_click_multimask=True):
        model.get_parameter(name).requires_grad_(False)
    loop = ClickLoop(
        model,
        num_clicks=2,
        accumulate_clicks=True,
        detach_mask_prompt=True,
        loss_resolution=resolution,
        first_click_multimask=True,
    )
    image = torch.randn(3, 1, S, S, S)
    label = torch.zeros(3, 1, S, S, S)
    label[0, :, 10:50, 10:50, 10:50] = 1
    label[1, :, 20:30, 20:30, 20:30] = 1
    label[2, :, 5:60, 30:34, 5:60] = 1
    out = loop(image, label, torch.tensor([1, 2, 3]))
    out["loss"].backward()
    head = model.mask_decoder.iou_prediction_head
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    # mask 0 (later clicks) and at least one multimask output get gradients
    mlps = model.mask_decoder.output_hypernetworks_mlps
    grads = [sum(float(p.grad.abs().sum()) for p in m.parameters()) for m in mlps]
    assert grads[0] > 0 and max(grads[1:]) > 0
    assert out["dice"].shape == (2,)


def test_never_trained_parameters_with_and_without_multimask():
    model = build_model("sam_med3d_tiny")
    published = set(never_trained_parameters(model))
    multimask = set(never_trained_parameters(model, first_click_multimask=True))
    assert any(n.startswith("mask_decoder.iou_prediction_head.") for n in published)
    assert not any(n.startswith("mask_decoder.iou_prediction_head.") for n in multimask)
    assert not any("output_hypernetworks_mlps" in n for n in multimask)
    assert multimask == {n for n in published if n.startswith("prompt_encoder.no_mask_embed.")}


def test_checkpoints_record_the_behaviour(tmp_path):
    model = build_model("sam_med3d_tiny_dense")
    assert not model.first_click_multimask
    plain = tmp_path / "plain.pth"
    save_checkpoint(model, plain)
    model.config = model_config_of(model).__class__(
        **{**model_config_of(model).to_dict(), "first_click_multimask": True}
    )
    multi = tmp_path / "multi.pth"
    save_checkpoint(model, multi)
    assert load_checkpoint(multi).first_click_multimask
    assert not load_checkpoint(plain).first_click_multimask
    # by name: the weights' recorded behaviour wins (it is not part of the architecture)
    assert build_model("sam_med3d_tiny_dense", multi).first_click_multimask
    assert not build_model("sam_med3d_tiny_dense", plain).first_click_multimask
