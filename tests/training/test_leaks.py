"""Over-segmented mask prompts (``sammed3d.training.leaks``) and their use in the click loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sammed3d import build_model
from sammed3d.training.interaction import ClickLoop
from sammed3d.training.leaks import leaked_prompt

from .conftest import dense_click_loop

G = 32


def _ball(radius: float, centre: tuple[int, int, int] = (16, 16, 16)) -> torch.Tensor:
    zz, yy, xx = torch.meshgrid(*[torch.arange(G)] * 3, indexing="ij")
    d2 = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2
    return d2 <= radius**2


@pytest.mark.parametrize("seed", range(8))
def test_leak_keeps_the_target_and_adds_one_attached_region(seed):
    target = _ball(7.0)
    logits = leaked_prompt(target, np.random.default_rng(seed))
    assert logits is not None and logits.shape == target.shape
    mask = logits > 0
    assert bool(mask[target].all())  # every target cell stays positive
    leak = mask & ~target
    assert 0 < int(leak.sum()) <= 2 * int(target.sum())
    # the leak touches the target (its 6-neighbourhood dilation meets the leak)
    kernel = torch.zeros(1, 1, 3, 3, 3)
    kernel[0, 0, 1, 1, :] = kernel[0, 0, 1, :, 1] = kernel[0, 0, :, 1, 1] = 1
    grown = F.conv3d(target[None, None].float(), kernel, padding=1)[0, 0] > 0
    assert bool((grown & leak).any())
    # soft border: magnitudes vary, bounded by the drawn scale (at most 8)
    assert float(logits.abs().max()) <= 8.0 + 1e-6
    assert len(torch.unique(logits)) > 2


def test_thin_targets_stay_positive():
    target = torch.zeros(G, G, G, dtype=torch.bool)
    target[16, 16, 4:28] = True  # a one-cell line: a box filter alone would erase it
    logits = leaked_prompt(target, np.random.default_rng(3))
    assert logits is not None and bool((logits[target] > 0).all())


def test_no_prompt_without_a_target_or_room():
    rng = np.random.default_rng(0)
    assert leaked_prompt(torch.zeros(G, G, G, dtype=torch.bool), rng) is None
    assert leaked_prompt(torch.ones(G, G, G, dtype=torch.bool), rng) is None
    with pytest.raises(ValueError, match=r"\(D, H, W\)"):
        leaked_prompt(torch.zeros(1, G, G, G, dtype=torch.bool), rng)
    with pytest.raises(ValueError, match="fraction_range"):
        leaked_prompt(_ball(5.0), rng, fraction_range=(0.5, 0.1))


def test_the_same_rng_gives_the_same_leak():
    target = _ball(6.0, (12, 14, 18))
    a = leaked_prompt(target, np.random.default_rng(11))
    b = leaked_prompt(target, np.random.default_rng(11))
    assert a is not None and b is not None and torch.equal(a, b)


def _loop(fraction: float) -> ClickLoop:
    return dense_click_loop(leak_prompt_fraction=fraction)


def _spy(loop: ClickLoop) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    original = loop.model.decode

    def spy(emb, coords, labels, prev, multimask_output=False):
        calls.append((coords.clone(), labels.clone(), prev.clone()))
        return original(emb, coords, labels, prev, multimask_output=multimask_output)

    loop.model.decode = spy  # type: ignore[method-assign]
    return calls


def _label() -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.randn(2, 1, 64, 64, 64, generator=torch.Generator().manual_seed(0))
    label = torch.zeros(2, 1, 64, 64, 64)
    label[0, 0, 20:44, 18:40, 22:46] = 1
    label[1, 0, 10:30, 30:52, 16:40] = 1
    return image, label


def test_click_loop_gives_the_second_click_a_leaked_prompt_and_a_negative_click_in_it():
    loop = _loop(1.0)
    calls = _spy(loop)
    image, label = _label()
    with torch.no_grad():
        loop(image, label, torch.tensor([1, 2]), mask_only=[])
    coords, labels, prev = calls[1]
    target = F.avg_pool3d(label, 2) > 0.5  # the 32^3 logit grid of the tiny model
    for b in range(2):
        mask = prev[b, 0] > 0
        assert bool(mask[target[b, 0]].all()) and bool((mask & ~target[b, 0]).any())
        # the second click is negative and lies in the leak (outside the target)
        assert labels[b, 1].item() == 0
        voxel = tuple(coords[b, 1].long().tolist())
        assert not bool(label[b, 0][voxel])
        assert bool(mask[tuple(v // 2 for v in voxel)])


def test_leak_draws_leave_the_other_draws_alone():
    image, label = _label()
    runs = []
    for fraction in (0.0, 0.0):
        loop = _loop(fraction)
        calls = _spy(loop)
        with torch.no_grad():
            out = loop(image, label, torch.tensor([1, 2]), mask_only=[])
        runs.append((calls, out["dice_per_sample"]))
    leaky = _loop(1.0)
    leaky_calls = _spy(leaky)
    with torch.no_grad():
        leaky(image, label, torch.tensor([1, 2]), mask_only=[])
    (a, da), (b, db) = runs
    assert torch.equal(da, db)
    # the first click is the same with or without leaks (the leak draw has its own stream)
    assert torch.equal(a[0][0], leaky_calls[0][0])
    assert not torch.equal(a[1][2], leaky_calls[1][2])


def test_leak_option_errors():
    model = build_model("sam_med3d_tiny_dense")
    with pytest.raises(ValueError, match="leak_prompt_fraction"):
        ClickLoop(model, loss_resolution="low", leak_prompt_fraction=1.5)
    with pytest.raises(ValueError, match="loss_resolution='low'"):
        ClickLoop(model, loss_resolution="full", leak_prompt_fraction=0.5)


def test_leak_keeps_away_from_earlier_negative_clicks():
    target = _ball(6.0)
    free = leaked_prompt(target, np.random.default_rng(5))
    assert free is not None
    leak = (free > 0) & ~target
    cell = leak.nonzero()[0]  # a cell the leak would cover
    kept = leaked_prompt(target, np.random.default_rng(5), keep_out=cell[None])
    assert kept is not None  # seed 5 draws a leak larger than the kept-out ball
    assert not bool(kept[tuple(cell.tolist())] > 0)
    grid = torch.stack(torch.meshgrid(*[torch.arange(G)] * 3, indexing="ij"))
    near = (grid - cell[:, None, None, None]).square().sum(0) <= 4
    assert not bool(((kept > 0) & ~target & near).any())
    assert bool(((kept > 0) & ~target).any())  # the rest of the leak is still there


def test_any_click_option_spreads_the_leak_over_later_clicks():
    loop = _loop(1.0)
    loop.leak_prompt_any_click = True
    loop.num_clicks = 4
    rngs = [np.random.default_rng(s) for s in range(200)]
    at = loop._leak_iterations(rngs)
    assert set(at.tolist()) == {1, 2, 3}
    loop.leak_prompt_any_click = False
    assert set(loop._leak_iterations([np.random.default_rng(s) for s in range(50)]).tolist()) == {1}
    loop.leak_prompt_fraction = 0.0
    assert set(loop._leak_iterations(rngs).tolist()) == {-1}
