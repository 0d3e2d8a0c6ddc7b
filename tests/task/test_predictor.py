"""Whole-volume prediction: sliding windows at 1.5 mm, labels back on the input's own grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from torch import nn

from sammed3d.evaluation.metrics import dice
from sammed3d.io import Volume, VolumeError, read_volume, write_volume
from sammed3d.task.predictor import TaskPredictor

from .conftest import tiny_spec, tiny_task_model


class BrightIsClassOne(nn.Module):
    """A stand-in network: class 1 where the normalised intensity exceeds 1.5."""

    def __init__(self) -> None:
        super().__init__()
        self.spec = tiny_spec(classes=("bright",))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[2:] == (64, 64, 64)
        self.calls += x.shape[0]
        return torch.cat([torch.zeros_like(x), 8.0 * (x - 1.5)], dim=1)


def _phantom(shape, spacing, direction, origin=(5.0, -20.0, 30.0)):
    """Head-like phantom in native space: body intensity 100, a bright ball 400."""
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1)
    vol = Volume(np.zeros(shape, np.float32), spacing, origin, direction)
    centre = vol.index_to_physical((np.asarray(shape) - 1) / 2.0)
    xyz = vol.index_to_physical(ijk) - centre
    r = np.linalg.norm(xyz, axis=-1)
    image = np.where(r < 60, 100.0, 0.0) + np.where(
        np.linalg.norm(xyz - (15, 0, -10), axis=-1) < 18, 300.0, 0.0
    )
    ball = np.linalg.norm(xyz - (15, 0, -10), axis=-1) < 18
    return vol.with_array(image.astype(np.float32)), ball


@pytest.mark.parametrize(
    ("spacing", "direction"),
    [
        ((1.0, 1.2, 2.5), np.eye(3)),
        ((0.9, 1.1, 2.0), Rotation.from_euler("xyz", (12, -8, 20), degrees=True).as_matrix()),
        ((1.5, 1.5, 1.5), np.diag([-1.0, 1.0, -1.0])),
    ],
)
def test_labels_come_back_on_the_input_grid(spacing, direction):
    image, ball = _phantom((110, 100, 56), spacing, direction)
    model = BrightIsClassOne()
    predictor = TaskPredictor(model, overlap=0.25)  # type: ignore[arg-type]
    labels = predictor.predict(image)
    assert labels.shape == image.shape and labels.array.dtype == np.uint8
    assert labels.spacing == image.spacing and labels.origin == image.origin
    np.testing.assert_allclose(labels.direction, image.direction)
    assert set(np.unique(labels.array)) == {0, 1}
    assert dice(labels.array == 1, ball) > 0.9
    assert model.calls > 1  # several windows: the 1.5 mm volume is larger than 64^3


def test_image_smaller_than_the_patch():
    image, ball = _phantom((30, 24, 20), (1.5, 1.5, 1.5), np.eye(3))
    image = image.with_array(np.where(ball, 400.0, 100.0).astype(np.float32))
    labels = TaskPredictor(BrightIsClassOne()).predict(image)  # type: ignore[arg-type]
    assert labels.shape == (30, 24, 20)
    assert dice(labels.array == 1, ball) > 0.9


def test_ct_clamp_comes_from_the_modality():
    model = BrightIsClassOne()
    image, _ = _phantom((40, 40, 40), (1.5, 1.5, 1.5), np.eye(3))
    image = image.with_array(np.where(image.array > 150, 3000.0, image.array).astype(np.float32))
    predictor = TaskPredictor(model)  # type: ignore[arg-type]
    grid_mr, _ = predictor.predict_resampled(image, modality="MR")
    grid_ct, _ = predictor.predict_resampled(image, modality="CT")
    assert grid_mr.array.max() == pytest.approx(3000.0)
    assert grid_ct.array.max() == pytest.approx(1000.0)


def test_written_label_map_keeps_the_input_header(tmp_path, task_checkpoint):
    image, _ = _phantom((40, 36, 30), (1.2, 1.2, 1.8), np.diag([-1.0, -1.0, 1.0]))
    write_volume(image, tmp_path / "img.nii.gz")
    source = read_volume(tmp_path / "img.nii.gz")
    labels = TaskPredictor.from_checkpoint(task_checkpoint).predict(source)
    write_volume(labels, tmp_path / "labels.nii.gz")
    import nibabel as nib

    a, b = nib.load(tmp_path / "img.nii.gz"), nib.load(tmp_path / "labels.nii.gz")
    np.testing.assert_array_equal(a.header.get_sform(), b.header.get_sform())
    np.testing.assert_array_equal(a.header.get_qform(), b.header.get_qform())
    assert set(np.unique(np.asarray(b.dataobj))) <= {0, 1, 2}


def test_bad_settings_are_one_line():
    with pytest.raises(ValueError, match="overlap must be in"):
        TaskPredictor(tiny_task_model(), overlap=1.0)
    with pytest.raises(ValueError, match="sw_batch_size"):
        TaskPredictor(tiny_task_model(), sw_batch_size=0)


@pytest.mark.parametrize(
    ("image", "got"),
    [
        (np.zeros((8, 8, 8), np.float32), "a numpy array of shape (8, 8, 8)"),
        ("ct.nii.gz", "a str"),
        ([[[0.0]]], "a list of 1 item"),
    ],
)
def test_an_image_that_is_no_volume_is_named(image: object, got: str) -> None:
    """An array or a path failed deep inside with an AttributeError."""
    with pytest.raises(VolumeError) as exc:
        TaskPredictor(tiny_task_model()).predict(image)  # type: ignore[arg-type]
    assert str(exc.value) == (
        "volume: expected a sammed3d.io.Volume (a file: sammed3d.io.read_volume(path); an "
        f"array: Volume(array, spacing)), got {got}"
    )


class RecordsWindows(nn.Module):
    """A stand-in network that keeps the windows it is given (all background)."""

    def __init__(self, **spec: object) -> None:
        super().__init__()
        self.spec = tiny_spec(classes=("x",), **spec)
        self.windows: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.windows.append(x.clone())
        return torch.cat([torch.ones_like(x), torch.zeros_like(x)], dim=1)


@pytest.mark.parametrize(("padding", "raw"), [("minimum", -1000.0), ("zero", 0.0)])
def test_a_small_image_is_padded_as_training_crops_are(padding, raw):
    """Training pads crops with the case's lowest intensity (air, raw -1000 after the CT
    clamp); a checkpoint that does not record its padding was trained with raw 0."""
    from sammed3d.task.preprocess import zscore_stats

    array = np.full((20, 20, 20), -1000.0, np.float32)
    array[4:16, 4:16, 4:16] = 40.0 + np.arange(12**3, dtype=np.float32).reshape(12, 12, 12) % 7
    image = Volume(array, (1.5, 1.5, 1.5))
    model = RecordsWindows(padding=padding)
    TaskPredictor(model).predict(image, modality="CT")  # type: ignore[arg-type]
    (window,) = model.windows
    mean, std = zscore_stats(array)
    assert float(window[0, 0, 0, 0, 0]) == pytest.approx((raw - mean) / std, rel=1e-5)
