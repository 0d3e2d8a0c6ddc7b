"""Pre-processing transforms: torchio-equivalent canonical orientation, resampling, crops."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from sammed3d.data.transforms import (
    Roi,
    bbox_center,
    crop_or_pad,
    crop_start,
    ct_clamp,
    resample,
    resampled_grid,
    to_canonical,
    zscore_foreground,
)
from sammed3d.io import Volume

DIRECTIONS = {
    "identity_lps": np.eye(3),
    "ras_stored": np.diag([-1.0, -1.0, 1.0]),
    "permuted": np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]),
    "oblique": Rotation.from_euler("xyz", [14, -23, 31], degrees=True).as_matrix(),
}


def _volume(direction: np.ndarray, shape=(9, 7, 5), spacing=(0.8, 1.3, 2.1)) -> Volume:
    rng = np.random.default_rng(0)
    return Volume(rng.random(shape).astype(np.float32), spacing, (4.0, -7.0, 2.5), direction)


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_to_canonical_matches_nibabel_and_keeps_physical_positions(name):
    vol = _volume(DIRECTIONS[name])
    out = to_canonical(vol)
    ref = nib.as_closest_canonical(nib.Nifti1Image(vol.array, vol.affine))
    np.testing.assert_array_equal(out.array, np.asarray(ref.dataobj))
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-9)
    # every value sits at the same physical place as before
    ijk = np.argwhere(vol.array == vol.array.max())[0]
    uvw = np.argwhere(out.array == vol.array.max())[0]
    np.testing.assert_allclose(vol.index_to_physical(ijk), out.index_to_physical(uvw), atol=1e-9)
    # axes point to R, A, S (closest): diagonal of the RAS direction is positive
    ras_dir = out.affine[:3, :3] / np.asarray(out.spacing)
    assert np.all(np.diag(ras_dir) > 0.5)


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_resample_grid_is_centred_floor_sized_and_linear_exact(name):
    shape, spacing = (17, 11, 6), (0.7, 1.1, 2.6)
    vol0 = _volume(DIRECTIONS[name], shape, spacing)
    xyz = vol0.index_to_physical(np.indices(shape).transpose(1, 2, 3, 0))
    coef = np.array([0.5, -1.25, 2.0])
    vol = vol0.with_array((xyz @ coef + 3.0).astype(np.float32))
    out = resample(vol, (1.5, 1.5, 1.5))
    assert out.shape == (7, 8, 10)  # floor(17*.7/1.5), floor(11*1.1/1.5), floor(6*2.6/1.5)
    assert out.shape == resampled_grid(vol, (1.5, 1.5, 1.5))[0]
    centre_in = vol.index_to_physical((np.asarray(shape) - 1) / 2)
    centre_out = out.index_to_physical((np.asarray(out.shape) - 1) / 2)
    np.testing.assert_allclose(centre_in, centre_out, atol=1e-9)
    np.testing.assert_allclose(out.direction, vol.direction)
    # linear interpolation reproduces a linear function of position exactly (inside the
    # input's voxel centres; up to half a new voxel beyond them ITK repeats the edge)
    oxyz = out.index_to_physical(np.indices(out.shape).transpose(1, 2, 3, 0))
    cont = vol.physical_to_index(oxyz)
    inside = np.all((cont > -1e-6) & (cont < np.asarray(shape) - 1 + 1e-6), axis=-1)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(out.array[inside], (oxyz @ coef + 3.0)[inside], atol=1e-3)


def test_resample_nearest_keeps_label_values_and_dtype():
    rng = np.random.default_rng(3)
    vol = Volume(rng.integers(0, 4, (12, 10, 8)).astype(np.uint8), (0.9, 0.9, 2.0))
    out = resample(vol, (1.5, 1.5, 1.5), interpolation="nearest")
    assert out.array.dtype == np.uint8
    assert set(np.unique(out.array)) <= {0, 1, 2, 3}
    with pytest.raises(ValueError, match="interpolation"):
        resample(vol, interpolation="cubic")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("lo", "hi", "size", "start"),
    [
        (10, 20, 128, -49),  # torchio: centre 15.0 on index, even target -> begin 15 - 64
        (10, 21, 128, -49),  # centre 15.5 -> shifted to 15.0
        (10, 11, 128, -54),  # one voxel lands at index 64
        (10, 20, 5, 12),  # odd target, centre on index -> shifted by -0.5
        (10, 21, 5, 13),
    ],
)
def test_crop_centring_matches_torchio_rule(lo, hi, size, start):
    mask = np.zeros((40, 40, 40), bool)
    mask[lo:hi, 5:6, 5:6] = True
    center = bbox_center(mask)
    assert center[0] == (lo + hi - 1) / 2
    assert crop_start(center[0], size) == start
    _, roi = crop_or_pad(mask, center, size)
    assert roi.start[0] == start


def test_crop_or_pad_pads_and_pastes_back_exactly():
    rng = np.random.default_rng(1)
    arr = rng.random((11, 9, 7)).astype(np.float32)
    crop, roi = crop_or_pad(arr, (1, 8, 3), size=(6, 6, 10), pad_value=-5)
    assert crop.shape == (6, 6, 10) and roi.start == (-2, 5, -2)
    assert (crop[:2] == -5).all() and (crop[:, 4:] == -5).all()  # outside on both ends
    back = roi.paste(crop, arr.shape, fill=0)
    src, _ = roi.overlap(arr.shape)
    np.testing.assert_array_equal(back[src], arr[src])
    assert back.sum() == pytest.approx(arr[src].sum())
    # channels and tensors go through the same code
    t = torch.from_numpy(np.stack([arr, arr * 2]))
    tcrop, troi = crop_or_pad(t, (1, 8, 3), size=(6, 6, 10))
    assert isinstance(tcrop, torch.Tensor) and tcrop.shape == (2, 6, 6, 10) and troi == roi
    np.testing.assert_array_equal(tcrop[1].numpy(), np.where(crop == -5, 0, crop) * 2)


def test_roi_validation_and_shift():
    with pytest.raises(ValueError, match="positive"):
        Roi((0, 0, 0), (0, 4, 4))
    assert Roi((1, 2, 3), (4, 4, 4)).shifted((2, -2, 0)).start == (3, 0, 3)
    assert Roi((0, 0, 0), (4, 4, 4)).center == (1.5, 1.5, 1.5)


def test_bbox_center_errors_on_empty_mask():
    with pytest.raises(ValueError, match="empty"):
        bbox_center(np.zeros((4, 4, 4)))


def test_zscore_uses_foreground_statistics_and_rejects_degenerate_input():
    arr = np.zeros((4, 4, 4), np.float32)
    arr[0, 0, :] = [1, 2, 3, 4]
    out = zscore_foreground(arr)
    fg = np.array([1, 2, 3, 4], np.float64)
    np.testing.assert_allclose(out[0, 0], (fg - fg.mean()) / fg.std(ddof=1), rtol=1e-6)
    np.testing.assert_allclose(out[1, 1, 1], -fg.mean() / fg.std(ddof=1), rtol=1e-6)
    tout = zscore_foreground(torch.from_numpy(arr))
    np.testing.assert_allclose(tout.numpy(), out, rtol=1e-6)
    with pytest.raises(ValueError, match="same value"):
        zscore_foreground(np.where(arr > 0, 5.0, 0.0))
    with pytest.raises(ValueError, match="none"):
        zscore_foreground(-np.abs(arr))


def test_ct_clamp():
    arr = np.array([-3000.0, -10.0, 5000.0])
    np.testing.assert_array_equal(ct_clamp(arr), [-1000.0, -10.0, 1000.0])
    np.testing.assert_array_equal(ct_clamp(torch.tensor(arr)).numpy(), [-1000.0, -10.0, 1000.0])
    with pytest.raises(ValueError):
        ct_clamp(arr, 5, 5)
