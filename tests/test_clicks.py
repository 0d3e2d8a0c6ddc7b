"""Click simulation: strategy properties, labels, reproducibility, batch sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt

from sammed3d.clicks import (
    PADDING_LABEL,
    Click,
    padded_edt,
    sample_clicks_batch,
    sample_next_click,
)


def _ball(shape: tuple[int, int, int], center: tuple[float, ...], radius: float) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float64)
    dist2 = sum((g - c) ** 2 for g, c in zip(grid, center, strict=True))
    return dist2 <= radius**2


@pytest.fixture
def gt() -> np.ndarray:
    return _ball((24, 28, 20), (11, 13, 9), 6.0)


def test_first_random_click_is_uniform_gt_voxel(gt: np.ndarray) -> None:
    pred = np.zeros_like(gt)
    rng = np.random.default_rng(0)
    clicks = [sample_next_click(pred, gt, rng=rng) for _ in range(300)]
    assert all(gt[c.coord] and c.positive for c in clicks)
    # uniform over the object: many distinct voxels, including boundary ones
    coords = {c.coord for c in clicks}
    assert len(coords) > 150
    boundary = gt & ~np.pad(gt, 1)[2:, 1:-1, 1:-1]
    assert any(boundary[c] for c in coords)


def test_random_clicks_lie_in_error_region_with_fn_label(gt: np.ndarray) -> None:
    pred = np.roll(gt, 4, axis=0)  # both FN and FP voxels
    fn, fp = gt & ~pred, pred & ~gt
    rng = np.random.default_rng(1)
    clicks = [sample_next_click(pred, gt, rng=rng) for _ in range(400)]
    for c in clicks:
        assert fn[c.coord] or fp[c.coord]
        assert c.positive == bool(fn[c.coord])
    positives = sum(c.positive for c in clicks)
    # FN and FP have the same size here: both labels must occur in roughly equal numbers
    assert fn.sum() == fp.sum()
    assert 120 < positives < 280


def test_perfect_prediction_gives_positive_gt_click(gt: np.ndarray) -> None:
    for strategy in ("random", "center"):
        click = sample_next_click(gt.copy(), gt, strategy=strategy, rng=3)
        assert gt[click.coord] and click.positive


def test_center_first_click_is_maximum_distance_voxel() -> None:
    gt = np.zeros((15, 15, 15), bool)
    gt[4:7, 6:9, 2:5] = True  # 3x3x3 cube: only its centre is deeper than max/2
    gt[10:12, 10:12, 10:12] = True  # a smaller second component
    click = sample_next_click(np.zeros_like(gt), gt, strategy="center", rng=0)
    assert click == Click(coord=(5, 7, 3), positive=True)


def test_center_click_respects_half_max_rule_and_type(gt: np.ndarray) -> None:
    # prediction covers all but a thin slab (FN) and adds a big blob outside (FP, deeper)
    pred = gt.copy()
    pred[:, :, :3] = False
    pred |= _ball(gt.shape, (18, 20, 15), 4.5) & ~gt
    fn, fp = gt & ~pred, pred & ~gt
    fp_dt = distance_transform_edt(np.pad(fp, 1))[1:-1, 1:-1, 1:-1]
    fn_dt = distance_transform_edt(np.pad(fn, 1))[1:-1, 1:-1, 1:-1]
    assert fp_dt.max() > fn_dt.max()
    rng = np.random.default_rng(5)
    for _ in range(50):
        click = sample_next_click(pred, gt, strategy="center", rng=rng)
        assert not click.positive
        assert fp[click.coord]
        assert fp_dt[click.coord] > fp_dt.max() / 2


def test_center_click_touching_border_is_padded() -> None:
    # a slab touching the array border: without the 1-voxel padding the EDT would rate the
    # border voxels k = 0 as the deepest ones (distance 5 to the first background voxel)
    gt = np.zeros((10, 10, 10), bool)
    gt[:, :, :5] = True
    rng = np.random.default_rng(0)
    for _ in range(30):
        i, j, k = sample_next_click(np.zeros_like(gt), gt, strategy="center", rng=rng).coord
        assert 1 <= i <= 8 and 1 <= j <= 8 and 1 <= k <= 3


def test_center_uses_physical_spacing() -> None:
    # 9 x 9 x 9 voxels, very thin along axis 0 in mm: depth is limited by axis 0
    gt = np.ones((9, 9, 9), bool)
    dt_vox = padded_edt(gt)
    dt_mm = padded_edt(gt, spacing=(0.1, 1.0, 1.0))
    assert dt_vox.max() == pytest.approx(5.0)
    assert dt_mm.max() == pytest.approx(0.5)
    expected = distance_transform_edt(np.pad(gt, 1), sampling=(0.1, 1, 1))[1:-1, 1:-1, 1:-1]
    np.testing.assert_allclose(dt_mm, expected)


def test_padded_edt_bbox_crop_is_exact() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((20, 18, 16)) > 0.4
    mask[:3] = False
    mask[:, -4:] = False
    expected = distance_transform_edt(np.pad(mask, 1), sampling=(1.0, 2.0, 0.5))[1:-1, 1:-1, 1:-1]
    np.testing.assert_allclose(padded_edt(mask, (1.0, 2.0, 0.5)), expected)


def test_seeded_and_reproducible(gt: np.ndarray) -> None:
    pred = np.roll(gt, 3, axis=1)
    for strategy in ("random", "center"):
        a = [sample_next_click(pred, gt, strategy=strategy, rng=11) for _ in range(3)]
        b = [sample_next_click(pred, gt, strategy=strategy, rng=11) for _ in range(3)]
        assert a == b
    g1, g2 = np.random.default_rng(7), np.random.default_rng(7)
    seq1 = [sample_next_click(pred, gt, rng=g1).coord for _ in range(5)]
    seq2 = [sample_next_click(pred, gt, rng=g2).coord for _ in range(5)]
    assert seq1 == seq2 and len(set(seq1)) > 1


def test_accepts_tensors_and_numeric_masks(gt: np.ndarray) -> None:
    click_np = sample_next_click(np.zeros(gt.shape, np.uint8), gt.astype(np.int16), rng=2)
    click_t = sample_next_click(torch.zeros(gt.shape), torch.from_numpy(gt).float(), rng=2)
    assert click_np == click_t


def test_errors(gt: np.ndarray) -> None:
    with pytest.raises(ValueError, match="ground truth is empty"):
        sample_next_click(np.zeros_like(gt), np.zeros_like(gt))
    with pytest.raises(ValueError, match="same shape"):
        sample_next_click(np.zeros((3, 3, 3), bool), gt)
    with pytest.raises(ValueError, match="strategy"):
        sample_next_click(np.zeros_like(gt), gt, strategy="ritm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="3-D"):
        sample_next_click(np.zeros((4, 4), bool), np.ones((4, 4), bool))


# ------------------------------------------------------------------------------------ batch


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    gt = torch.zeros(4, 1, 12, 10, 8, dtype=torch.bool)
    pred = torch.zeros_like(gt)
    gt[0, 0, 2:6, 3:7, 1:5] = True  # sample 0: first click (empty pred)
    gt[1, 0, 4:9, 2:8, 2:7] = True
    pred[1, 0, 6:11, 2:8, 2:7] = True  # sample 1: FN and FP
    gt[2, 0, 5, 6, 7] = True
    pred[2] = gt[2]  # sample 2: perfect -> the single GT voxel, positive
    pred[3, 0, 1, 1, 1] = True  # sample 3: empty GT -> padding click
    return pred, gt


def test_batch_clicks_properties() -> None:
    pred, gt = _batch()
    for seed in range(20):
        coords, labels = sample_clicks_batch(
            pred, gt, generator=torch.Generator().manual_seed(seed)
        )
        assert coords.shape == (4, 1, 3) and coords.dtype == torch.float32
        assert labels.shape == (4, 1) and labels.dtype == torch.int64
        c = coords[:, 0].long()
        for b in range(2):
            fn = gt[b, 0] & ~pred[b, 0]
            fp = pred[b, 0] & ~gt[b, 0]
            d, h, w = c[b].tolist()
            assert fn[d, h, w] or fp[d, h, w]
            assert labels[b, 0].item() == int(fn[d, h, w])
        assert c[2].tolist() == [5, 6, 7] and labels[2, 0].item() == 1
        assert c[3].tolist() == [0, 0, 0] and labels[3, 0].item() == PADDING_LABEL


def test_batch_clicks_are_uniform_and_reproducible() -> None:
    pred, gt = _batch()
    g = torch.Generator().manual_seed(0)
    seen = [
        tuple(sample_clicks_batch(pred, gt, generator=g)[0][0, 0].long().tolist())
        for _ in range(200)
    ]
    assert len(set(seen)) > 40  # 64-voxel object, uniform draw
    first = [
        sample_clicks_batch(pred, gt, generator=torch.Generator().manual_seed(3)) for _ in range(2)
    ]
    assert torch.equal(first[0][0], first[1][0]) and torch.equal(first[0][1], first[1][1])
    # 4-D input and numeric dtypes give the same result as 5-D bool
    four_d = sample_clicks_batch(
        pred[:, 0].float(), gt[:, 0].to(torch.uint8), generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(four_d[0], first[0][0]) and torch.equal(four_d[1], first[0][1])


def test_batch_clicks_bad_shapes() -> None:
    with pytest.raises(ValueError, match="same shape"):
        sample_clicks_batch(torch.zeros(2, 4, 4, 4), torch.zeros(2, 4, 4, 5))
    with pytest.raises(ValueError, match="one channel"):
        sample_clicks_batch(torch.zeros(2, 2, 4, 4, 4), torch.zeros(2, 2, 4, 4, 4))
    with pytest.raises(ValueError, match=r"\(B, 1, D, H, W\)"):
        sample_clicks_batch(torch.zeros(4, 4, 4), torch.zeros(4, 4, 4))
