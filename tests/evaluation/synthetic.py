"""Synthetic datasets and test click methods for the evaluation tests (small volumes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sammed3d.clicks import Click
from sammed3d.io import Volume, write_volume

SHAPE = (40, 36, 24)
SPACING = (1.0, 1.25, 2.0)


def ball(shape: tuple[int, int, int], center: tuple[float, ...], radius_mm: float) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float64)
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, center, SPACING, strict=True))
    return d2 <= radius_mm**2


def make_case(seed: int, with_box: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Image (float32) and label map (uint8): label 1 a bright ball, label 2 a darker box."""
    rng = np.random.default_rng(seed)
    label = np.zeros(SHAPE, np.uint8)
    label[ball(SHAPE, (14 + seed, 12, 9), 7.5)] = 1
    if with_box:
        label[26:36, 20:28, 12:18] = 2  # 10 x 8 x 6 voxels
    image = rng.normal(0.0, 5.0, SHAPE).astype(np.float32)
    image[label == 1] += 200.0
    image[label == 2] += 100.0
    return image, label


def make_nnunet_dataset(root: Path, n_cases: int = 2) -> Path:
    """nnU-Net v2 dataset: case_0 has both classes, later cases lack the box (empty target)."""
    root.mkdir(parents=True)
    meta = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "ball": 1, "box": 2},
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    for n in range(n_cases):
        image, label = make_case(n, with_box=(n == 0))
        origin = (10.0, -5.0, 3.0)
        write_volume(Volume(image, SPACING, origin), root / "imagesTr" / f"case_{n}_0000.nii.gz")
        write_volume(Volume(label, SPACING, origin), root / "labelsTr" / f"case_{n}.nii.gz")
    return root


class OracleMethod:
    """Returns the ground truth (Dice 1 at every click)."""

    name = "oracle"
    uses_gt = True

    def __init__(self) -> None:
        self.gt: np.ndarray | None = None
        self.images = 0

    def set_image(self, image: Volume, *, modality: str | None = None) -> None:
        self.images += 1

    def start_target(self, *, roi_mask: np.ndarray | None, gt: np.ndarray | None) -> None:
        assert gt is not None
        self.gt = gt

    def add_click(self, click: Click) -> np.ndarray:
        assert self.gt is not None
        return self.gt.copy()


class HalfMethod(OracleMethod):
    """Returns the ground-truth voxels below the bounding-box centre along axis 0."""

    name = "half"

    def add_click(self, click: Click) -> np.ndarray:
        assert self.gt is not None
        idx = np.flatnonzero(self.gt.any(axis=(1, 2)))
        cut = (idx[0] + idx[-1] + 1) // 2
        out = self.gt.copy()
        out[cut:] = False
        return out


class RecordingMethod:
    """No ground-truth access: grows a cube around each positive click, removes negatives.

    Records everything the harness passes, so tests can check the protocol.
    """

    name = "recorder"
    uses_gt = False

    def __init__(self, radius: int = 2) -> None:
        self.radius = radius
        self.shape: tuple[int, int, int] | None = None
        self.mask: np.ndarray | None = None
        self.calls: list[tuple[str, object]] = []
        self.outputs: list[np.ndarray] = []

    def set_image(self, image: Volume, *, modality: str | None = None) -> None:
        self.shape = image.shape
        self.calls.append(("set_image", (image.shape, modality)))

    def start_target(self, *, roi_mask: np.ndarray | None, gt: np.ndarray | None) -> None:
        assert gt is None
        assert self.shape is not None
        self.mask = np.zeros(self.shape, bool)
        self.calls.append(("start_target", roi_mask))

    def add_click(self, click: Click) -> np.ndarray:
        assert self.mask is not None
        self.calls.append(("add_click", click))
        r = self.radius
        box = tuple(slice(max(0, c - r), c + r + 1) for c in click.coord)
        self.mask[box] = click.positive
        self.outputs.append(self.mask.copy())
        return self.mask.copy()
