"""inference.validation: which files and arrays are usable intensity volumes, and the one-line
reasons for those that are not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sammed3d.inference.validation import LABEL_LIKE_MAX_VALUES, check_image_array, load_image
from sammed3d.io import Volume, VolumeError, write_volume


def _ct(shape=(12, 10, 8), seed=0) -> np.ndarray:
    """A CT-like int16 volume: many distinct values, negative ones included."""
    rng = np.random.default_rng(seed)
    return (rng.normal(40, 300, size=shape)).astype(np.int16)


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


@pytest.mark.parametrize(
    "array",
    [
        _ct(),
        np.random.default_rng(1).random((5, 6, 7)).astype(np.float32),  # fractional floats
        # few values, but negative ones (as for integers)
        np.random.default_rng(2).choice([-0.5, 0.25, 0.75], size=(6, 6, 6)),
        # few integer values, but negative ones: a CT window, not a label map
        np.random.default_rng(3).choice([-1000, 0, 40], size=(6, 7, 8)).astype(np.int16),
        np.arange(4 * (LABEL_LIKE_MAX_VALUES + 1)).reshape(2, 2, -1),  # one more value
    ],
    ids=["ct_int16", "float", "negative_floats", "negative_ints", "many_ints"],
)
def test_intensity_images_pass(array: np.ndarray) -> None:
    check_image_array(array)  # no exception


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.ones((4, 5)), "expected a 3-D volume, got an array of shape (4, 5)"),
        (np.ones((2, 3, 4, 5)), "expected a 3-D volume"),
        (_ct((1, 10, 8)), "at least 2 voxels per axis, got (1, 10, 8)"),
        (np.random.default_rng(0).random((4, 4, 4)) > 0.5, "boolean array; that is a mask"),
        (np.ones((3, 3, 3), dtype=np.complex64) * (1 + 1j), "unsupported voxel type complex64"),
        (np.full((4, 4, 4), 7.5, np.float32), "is constant (every voxel is 7.5)"),
        (np.zeros((4, 4, 4), np.uint8), "is constant (every voxel is 0)"),
    ],
    ids=["2d", "4d", "thin", "bool", "complex", "constant", "zeros"],
)
def test_unusable_arrays_get_one_line_reasons(array: np.ndarray, match: str) -> None:
    with pytest.raises(VolumeError) as exc:
        check_image_array(array, name="scan.nii.gz")
    text = _one_line(exc)
    assert text.startswith("scan.nii.gz: ")
    assert match in text


def test_nan_and_inf_are_counted_separately() -> None:
    array = np.random.default_rng(0).random((6, 6, 6))
    array[0, 0, :3] = np.nan
    array[1, 2, 3] = np.inf
    array[2, 2, 2] = -np.inf
    with pytest.raises(VolumeError) as exc:
        check_image_array(array)
    assert "has 3 NaN and 2 infinite voxel(s)" in _one_line(exc)


def test_label_maps_are_refused_unless_allowed() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (10, 10, 10)).astype(np.uint8)
    with pytest.raises(VolumeError) as exc:
        check_image_array(labels)
    assert "looks like a label map (only 5 distinct integer values: 0, 1, 2, 3, 4)" in _one_line(
        exc
    )
    check_image_array(labels, allow_label_like=True)
    # integer-valued floats count as integers
    with pytest.raises(VolumeError, match=r"only 5 distinct integer values: 0, 1, 2, 3, 4\)"):
        check_image_array(labels.astype(np.float32))


def test_float_masks_are_refused_by_their_number_of_values() -> None:
    """A mask saved as floats with a value off an integer (a fresh-user trial's 0, 0.999, 1)
    is no scan: segment wrote a 35 ml mask from it."""
    mask = np.random.default_rng(0).choice(np.float32([0, 0.999, 1]), size=(10, 10, 10))
    with pytest.raises(VolumeError) as exc:
        check_image_array(mask, name="mask.nii.gz")
    assert _one_line(exc) == (
        "mask.nii.gz: looks like a label map (only 3 distinct values: 0, 0.999, 1); "
        "pass the intensity image, not a segmentation"
    )
    check_image_array(mask, allow_label_like=True)
    halves = np.random.default_rng(2).integers(0, 4, (6, 6, 6)).astype(np.float64) + 0.5
    with pytest.raises(VolumeError, match=r"only 4 distinct values: 0\.5, 1\.5, 2\.5, 3\.5\)"):
        check_image_array(halves)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_label_threshold_is_the_number_of_distinct_values(dtype: type) -> None:
    n = LABEL_LIKE_MAX_VALUES
    at_limit = np.resize(np.arange(n) / 7, (4, 4, n)).astype(dtype)
    with pytest.raises(VolumeError, match=f"only {n} distinct values: 0, 0.142857, 0.285714, "):
        check_image_array(at_limit)
    check_image_array(np.resize(np.arange(n + 1) / 7, at_limit.shape).astype(dtype))


def test_label_threshold_is_the_number_of_distinct_values() -> None:
    n = LABEL_LIKE_MAX_VALUES
    at_limit = np.resize(np.arange(n), (4, 4, n)).astype(np.int32)
    assert len(np.unique(at_limit)) == n
    with pytest.raises(VolumeError, match=f"only {n} distinct integer values: 0, 1, 2, 3, 4, 5, "):
        check_image_array(at_limit)
    above = np.resize(np.arange(n + 1), at_limit.shape).astype(np.int32)
    assert len(np.unique(above)) == n + 1
    check_image_array(above)


def test_large_arrays_are_judged_on_a_sample() -> None:
    # 2 million voxels: every 2nd voxel is sampled; the odd ones hold the only other values
    array = np.zeros(2_000_000, np.int32)
    array[::2] = np.arange(1_000_000) % 3  # sampled: 3 values -> looks like labels
    array[1::2] = 1000 + np.arange(1_000_000)  # never sampled
    with pytest.raises(VolumeError, match="only 3 distinct integer values"):
        check_image_array(array.reshape(100, 100, 200))


def _write(tmp: Path, array: np.ndarray, name: str) -> Path:
    return write_volume(Volume(array, (0.8, 0.9, 2.0), (1.0, 2.0, 3.0)), tmp / name)


def test_load_image_reads_and_checks(tmp_path: Path) -> None:
    array = _ct()
    path = _write(tmp_path, array, "ct.nrrd")
    volume = load_image(path)
    np.testing.assert_array_equal(volume.array, array)
    assert volume.spacing == pytest.approx((0.8, 0.9, 2.0))
    assert volume.path is not None and Path(volume.path).name == "ct.nrrd"


def test_load_image_names_the_file_in_its_errors(tmp_path: Path) -> None:
    labels = _write(tmp_path, np.random.default_rng(0).integers(0, 3, (8, 8, 8)).astype(np.uint8),
                    "labels.nii.gz")  # fmt: skip
    with pytest.raises(VolumeError) as exc:
        load_image(labels)
    assert _one_line(exc).startswith(f"{labels}: looks like a label map")
    assert load_image(labels, allow_label_like=True).shape == (8, 8, 8)
    mask = np.random.default_rng(0).choice(np.float32([0, 0.999, 1]), size=(8, 8, 8))
    for name in ("mask.nii.gz", "mask.nrrd"):
        path = _write(tmp_path, mask, name)
        with pytest.raises(VolumeError) as exc:
            load_image(path)
        assert _one_line(exc).startswith(f"{path}: looks like a label map (only 3 distinct values")
    flat = _write(tmp_path, np.full((6, 6, 6), 3, np.int16), "flat.mha")
    with pytest.raises(VolumeError, match=r"flat\.mha: is constant"):
        load_image(flat)
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.nii.gz")
