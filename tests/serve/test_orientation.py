"""The geometry assumed for protocol images, checked against SimpleITK and 3D Slicer's order."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from sammed3d.io import VolumeError
from sammed3d.serve.orientation import assumed_affine, parse_orientation, protocol_volume


def _sitk_image(shape_ijk=(5, 6, 7), spacing=(0.8, 1.1, 2.5)) -> sitk.Image:
    arr = np.random.default_rng(0).uniform(size=shape_ijk[::-1]).astype(np.float32)
    image = sitk.GetImageFromArray(arr)  # array [k, j, i]
    image.SetSpacing(spacing)
    return image  # identity direction, zero origin


def test_spl_is_slicers_array_of_an_identity_direction_image() -> None:
    image = _sitk_image()
    kji = sitk.GetArrayFromImage(image)  # what arrayFromVolume / GetArrayFromImage return
    spacing_kji = list(image.GetSpacing())[::-1]
    volume = protocol_volume(kji[None], {"spacing": spacing_kji})  # default: SPL
    assert volume.shape == kji.shape  # masks come back in the sent order
    for a, b, c in [(0, 0, 0), (6, 5, 4), (3, 1, 2)]:
        lps = np.asarray(image.TransformIndexToPhysicalPoint((c, b, a)))
        np.testing.assert_allclose(volume.index_to_physical(np.array([a, b, c])), lps, atol=1e-9)
        assert volume.array[a, b, c] == kji[a, b, c]


@pytest.mark.parametrize(
    ("code", "columns"),
    [
        ("RAS", [[1, 0, 0], [0, 1, 0], [0, 0, 1]]),
        ("LPS", [[-1, 0, 0], [0, -1, 0], [0, 0, 1]]),
        ("SAR", [[0, 0, 1], [0, 1, 0], [1, 0, 0]]),
        ("spl", [[0, 0, 1], [0, -1, 0], [-1, 0, 0]]),
    ],
)
def test_orientation_codes(code: str, columns: list) -> None:
    affine = assumed_affine((0.8, 1.1, 2.5), code)
    expected = np.asarray(columns, float).T * [0.8, 1.1, 2.5]
    np.testing.assert_allclose(affine[:3, :3], expected)
    np.testing.assert_allclose(affine[:3, 3], 0)


@pytest.mark.parametrize("code", ["RAR", "XYZ", "RA", "RASS", "", "zyx"])
def test_bad_orientation_codes(code: str) -> None:
    with pytest.raises(ValueError, match="one each of R/L, A/P and S/I"):
        parse_orientation(code)


def test_affine_extension_replaces_the_assumption() -> None:
    affine = np.array([[0, 0, 1.5, 10], [0, -2.0, 0, 20], [-1.0, 0, 0, 30], [0, 0, 0, 1]])
    arr = np.zeros((1, 4, 5, 6), np.float32)
    volume = protocol_volume(arr, {"affine": affine.tolist(), "spacing": [1.0, 2.0, 1.5]})
    np.testing.assert_allclose(volume.affine, affine, atol=1e-12)
    with pytest.raises(VolumeError, match="disagrees"):
        protocol_volume(arr, {"affine": affine.tolist(), "spacing": [1.0, 1.0, 1.0]})


@pytest.mark.parametrize(
    ("image", "props", "message"),
    [
        (np.zeros((4, 5, 6)), {}, "4-D"),
        (np.zeros((2, 4, 5, 6)), {}, "channels"),
        (np.zeros((1, 4, 5, 6)), {"spacing": [1, 0, 1]}, "positive"),
        (np.zeros((1, 4, 5, 6)), {"spacing": "abc"}, "spacing"),
        (np.zeros((1, 4, 5, 6)), {"affine": [[1, 2], [3, 4]]}, "4x4"),
        (np.zeros((1, 4, 5, 6)), {"affine": np.eye(4).tolist()[:3] + [[1, 0, 0, 1]]}, "last row"),
        (
            np.zeros((1, 4, 5, 6)),
            {"affine": [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]},
            "sheared",
        ),
    ],
)
def test_bad_geometry(image: np.ndarray, props: dict, message: str) -> None:
    with pytest.raises(VolumeError, match=message):
        protocol_volume(image, props)


def test_an_image_without_spacing_is_said_to_get_1_mm(caplog: pytest.LogCaptureFixture) -> None:
    """2026-12-03 trial: set_image with empty image_properties was taken silently."""
    import logging

    arr = np.random.default_rng(0).random((1, 6, 7, 8)).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="sammed3d.serve"):
        volume = protocol_volume(arr, {})
    assert tuple(volume.spacing) == (1.0, 1.0, 1.0)
    assert "set_image without image_properties.spacing (or an affine): 1 mm voxels" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sammed3d.serve"):
        protocol_volume(arr, {"spacing": [1.0, 2.0, 3.0]})
    assert caplog.text == ""
