"""The simulated-click training step: gradients, mask-only iterations, per-sample clicks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sammed3d import build_model
from sammed3d.training.interaction import ClickLoop, centre_on_first_click, mask_only_iterations
from sammed3d.training.losses import build_seg_loss, hard_dice
from sammed3d.training.trainer import never_trained_parameters

S = 64  # sam_med3d_tiny input


def _batch(n: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(n, 1, S, S, S, generator=gen)
    label = torch.zeros(n, 1, S, S, S)
    for b in range(n):
        o = 16 + 6 * b
        label[b, :, o : o + 20, o : o + 16, o : o + 18] = 1
    return image, label


def _tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model("sam_med3d_tiny").train()
    for name in never_trained_parameters(model):
        model.get_parameter(name).requires_grad_(False)
    return model


def test_mask_only_iterations_follow_the_published_draw():
    rng = np.random.default_rng(0)
    draws = [mask_only_iterations(11, [2, 8], True, rng) for _ in range(300)]
    assert all(d[-1] == 10 for d in draws)
    randoms = {d[0] for d in draws}
    assert randoms == set(range(2, 9))  # randint(2, 9): 2..8 inclusive
    assert mask_only_iterations(3, None, False, rng) == []
    assert mask_only_iterations(3, [1, 1], True, rng) == [1, 2]


def test_every_trainable_parameter_gets_a_gradient():
    model = _tiny()
    loop = ClickLoop(model, num_clicks=3)
    image, label = _batch()
    out = loop(image, label, torch.tensor([11, 12]), mask_only=[1, 2])
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert out["dice"].shape == (3,) and out["dice_per_sample"].shape == (2, 3)
    out["loss"].backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert len(trainable) > 100
    missing = [n for n, p in trainable if p.grad is None]
    assert missing == []
    # Every trainable tensor moves, except the negative-click embedding when no click was
    # negative (it is in the graph, multiplied by a zero mask).
    zero = [n for n, p in trainable if not p.grad.abs().sum() > 0]
    assert set(zero) <= {"prompt_encoder.point_embeddings.0.weight"}
    frozen = set(never_trained_parameters(model))
    assert any("iou_prediction_head" in n for n in frozen)
    assert any("output_hypernetworks_mlps.1." in n for n in frozen)
    assert not any("output_hypernetworks_mlps.0." in n for n in frozen)


class _LastClickOnly(nn.Module):
    """Loss of the last iteration only (to see what reaches it through the chain)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.inner = build_seg_loss()
        self.n = n
        self.calls = 0

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        loss = self.inner(logits, target)
        return loss if self.calls == self.n else loss.detach() * 0


@pytest.mark.parametrize("detach", [False, True])
def test_gradients_flow_through_the_click_chain(detach):
    loop = ClickLoop(_tiny(), num_clicks=2, detach_mask_prompt=detach)
    loop.seg_loss = _LastClickOnly(2)
    image, label = _batch(1)
    # iteration 1 is mask-only: the positive point embedding can reach its loss only through
    # the low-res logits of iteration 0 fed back as the mask prompt
    out = loop(image, label, torch.tensor([5]), mask_only=[1])
    out["loss"].backward()
    grad = loop.model.prompt_encoder.point_embeddings[1].weight.grad
    if detach:
        assert grad is None or not grad.abs().sum() > 0
    else:
        assert grad is not None and grad.abs().sum() > 0


def test_mask_only_iterations_pass_no_points(monkeypatch):
    loop = ClickLoop(_tiny(), num_clicks=4, accumulate_clicks=True)
    seen = []
    decode = loop.model.decode

    def spy(emb, coords, labels, mask, multimask_output=False):
        seen.append(None if coords is None else tuple(coords.shape))
        assert mask is not None and tuple(mask.shape) == (1, 1, 16, 16, 16)
        return decode(emb, coords, labels, mask, multimask_output=multimask_output)

    monkeypatch.setattr(loop.model, "decode", spy)
    image, label = _batch(1)
    with torch.no_grad():
        loop(image, label, torch.tensor([3]), mask_only=[2, 3])
    assert seen == [(1, 1, 3), (1, 2, 3), None, None]  # clicks accumulate when points are given


def test_clicks_do_not_depend_on_the_batch():
    """A sample gets the same clicks alone or in a batch (needed for DDP equivalence)."""
    model = _tiny().eval()
    loop = ClickLoop(model, num_clicks=3)
    image, label = _batch(2)
    seeds = torch.tensor([101, 202])
    with torch.no_grad():
        both = loop(image, label, seeds, mask_only=[2])["dice_per_sample"]
        second = loop(image[1:], label[1:], seeds[1:], mask_only=[2])["dice_per_sample"]
        other_seed = loop(image[1:], label[1:], torch.tensor([7]), mask_only=[2])
    torch.testing.assert_close(both[1:], second, rtol=1e-5, atol=1e-6)
    assert other_seed["dice_per_sample"].shape == (1, 3)


def test_bad_shapes_are_clear_errors():
    loop = ClickLoop(_tiny(), num_clicks=2)
    image, label = _batch(1)
    with pytest.raises(ValueError, match=r"image must be \(B, 1, 64, 64, 64\)"):
        loop(image[:, :, :32], label[:, :, :32], torch.tensor([1]))
    with pytest.raises(ValueError, match="seeds must have shape"):
        loop(image, label, torch.tensor([1, 2]))


def test_hard_dice():
    logits = torch.full((2, 1, 4, 4, 4), -1.0)
    target = torch.zeros(2, 1, 4, 4, 4)
    logits[0, 0, :2] = 1.0
    target[0, 0, :1] = 1.0
    d = hard_dice(logits, target)
    assert d[0].item() == pytest.approx(2 * 16 / (32 + 16))
    assert d[1].item() == 1.0  # both empty


def _dense(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("sam_med3d_tiny_dense").train()


def test_low_resolution_loop_with_several_targets_per_crop():
    model = _dense()
    loop = ClickLoop(
        model,
        num_clicks=3,
        click_threshold=0.0,
        accumulate_clicks=True,
        detach_mask_prompt=True,
        loss_resolution="low",
        first_click_weight=2.0,
        center_click_fraction=0.5,
    )
    image, label = _batch()
    two = torch.cat([label, label.roll(8, dims=2)], dim=1)  # (B, 2, S, S, S): two targets
    calls = []
    original = model.decode

    def spy(emb, coords, labels, prev, multimask_output=False):
        calls.append((coords.clone(), labels.clone(), prev.shape))
        return original(emb, coords, labels, prev, multimask_output=multimask_output)

    model.decode = spy  # type: ignore[method-assign]
    out = loop(image, two, torch.tensor([3, 4]), mask_only=[])
    assert out["dice_per_sample"].shape == (4, 3)  # 2 crops x 2 targets, 3 clicks
    out["loss"].backward()
    assert model.hires_encoder.down1.weight.grad is not None
    # clicks accumulate (1, 2, 3 per target), the mask prompt is on the 32^3 logit grid
    assert [c[0].shape for c in calls] == [(4, 1, 3), (4, 2, 3), (4, 3, 3)]
    assert all(c[2] == (4, 1, 32, 32, 32) for c in calls)
    # the first click of each target is a positive voxel of that target
    first, labels = calls[0][0][:, 0].long(), calls[0][1][:, 0]
    targets = two.reshape(4, S, S, S)
    assert labels.tolist() == [1, 1, 1, 1]
    assert all(bool(targets[i][tuple(first[i].tolist())]) for i in range(4))
    # corrective clicks: positive ones lie in the target, negative ones outside it
    for coords, labs, _ in calls[1:]:
        for i in range(4):
            voxel = tuple(coords[i, -1].long().tolist())
            assert bool(targets[i][voxel]) == (labs[i, -1].item() == 1)


def test_low_resolution_loss_uses_the_area_averaged_target():
    model = _dense()
    loop = ClickLoop(model, num_clicks=1, loss_resolution="low", click_threshold=0.0)
    image, label = _batch(1)
    with torch.no_grad():
        out = loop(image, label, torch.tensor([5]), mask_only=[])
        low, _ = model.decode(
            model.encode(image), torch.zeros(1, 1, 3), torch.ones(1, 1, dtype=torch.long), None
        )
    assert low.shape[-1] == 32 and torch.isfinite(out["loss"])
    with pytest.raises(ValueError, match="loss_resolution"):
        ClickLoop(model, loss_resolution="quarter")


def test_centre_on_first_click_moves_a_target_voxel_to_the_centre():
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(3, 1, S, S, S, generator=gen)
    label = torch.zeros(3, 2, S, S, S, dtype=torch.bool)
    label[0, 0, 2:8, 40:50, 50:60] = True  # near a corner: moving it drops nothing
    label[1, 1, 30:34, 30:34, 30:34] = True  # only target 1 is filled
    label[0, 1, 20:24, 20:24, 20:24] = True
    seeds = torch.tensor([5, 6, 7])
    moved_image, moved_label, chosen = centre_on_first_click(image, label, seeds, 1.0)
    assert chosen[2] == -1  # no target: untouched
    assert chosen[1] == 1
    torch.testing.assert_close(moved_image[2], image[2])
    c = S // 2
    for b in (0, 1):
        k = int(chosen[b])
        assert moved_label[b, k, c, c, c]
        assert int(moved_label[b, k].sum()) == int(label[b, k].sum())
        # the same shift for the image and every target
        where_before = label[b, k].nonzero().float().mean(0)
        where_after = moved_label[b, k].nonzero().float().mean(0)
        shift = (where_after - where_before).round().long()
        assert float(moved_image[b].min()) == float(image[b].min())  # fill: the minimum
        src = image[b, 0, 20:40, 20:40, 20:40]
        lo = [20 + int(d) for d in shift]
        if all(0 <= v and v + 20 <= S for v in lo):
            dst = moved_image[b, 0, lo[0] : lo[0] + 20, lo[1] : lo[1] + 20, lo[2] : lo[2] + 20]
            torch.testing.assert_close(dst, src)
    again = centre_on_first_click(image, label, seeds, 1.0)
    assert torch.equal(again[2], chosen) and torch.equal(again[1], moved_label)
    none = centre_on_first_click(image, label, seeds, 0.0)
    assert (none[2] == -1).all() and torch.equal(none[0], image)


def test_centred_targets_get_their_first_click_at_the_centre(monkeypatch):
    model = build_model("sam_med3d_tiny_dense").train()
    image, label = _batch(2)
    label = torch.cat([label, label.flip(2)], dim=1)  # 2 targets per crop
    seen: list[torch.Tensor] = []
    decode = model.decode

    def spy(emb, coords, labels, mask, multimask_output=False):
        seen.append(coords.clone())
        return decode(emb, coords, labels, mask, multimask_output=multimask_output)

    monkeypatch.setattr(model, "decode", spy)
    loop = ClickLoop(model, num_clicks=2, accumulate_clicks=True, loss_resolution="low",
                     centre_first_click=1.0)  # fmt: skip
    loop(image, label, torch.tensor([1, 2]))
    _, _, chosen = centre_on_first_click(image, label, torch.tensor([1, 2]), 1.0)
    first = seen[0][:, 0]  # (B * K, 3)
    for b in range(2):
        for k in range(2):
            at_centre = bool((first[b * 2 + k] == S // 2).all())
            assert at_centre == (k == int(chosen[b]))


def test_a_target_moved_out_of_the_crop_is_replaced_by_the_centred_one():
    image = torch.zeros(1, 1, S, S, S)
    label = torch.zeros(1, 2, S, S, S, dtype=torch.bool)
    label[0, 0, 0:4, 0:4, 0:4] = True  # a corner: centring it pushes target 1 out
    label[0, 1, 56:64, 56:64, 56:64] = True
    seed = next(
        s
        for s in range(100)
        if centre_on_first_click(image, label, torch.tensor([s]), 1.0)[2][0] == 0
    )
    _, moved, chosen = centre_on_first_click(image, label, torch.tensor([seed]), 1.0)
    assert int(chosen[0]) == 0
    assert torch.equal(moved[0, 1], moved[0, 0]) and moved[0, 0].any()
