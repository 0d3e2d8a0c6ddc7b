"""Fixtures for the training tests: a small synthetic nnU-Net dataset on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sammed3d import build_model
from sammed3d.io import Volume, read_volume, write_volume
from sammed3d.training.interaction import ClickLoop


def write_nnunet_dataset(
    root: Path,
    n_cases: int = 4,
    shape: tuple[int, int, int] = (48, 44, 40),
    spacing: tuple[float, float, float] = (1.5, 1.5, 1.5),
    modality: str = "CT",
    direction: np.ndarray | None = None,
    seed: int = 0,
) -> Path:
    """Write ``root/dataset.json`` + ``imagesTr``/``labelsTr`` with two classes per case.

    Class 1 ("blob") is an ellipsoid of a few thousand voxels; class 2 ("speck") is a 2x2x2
    cube (8 voxels), below the usual ``min_target_voxels``. Intensities look like CT (air
    -1000 outside a body, values up to 1500 so the clamp matters).
    """
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    grid = np.stack(np.meshgrid(*(np.arange(s) for s in shape), indexing="ij"), axis=-1)
    direction = np.eye(3) if direction is None else direction
    for c in range(n_cases):
        centre = np.array(shape) / 2 + rng.uniform(-4, 4, size=3)
        radii = rng.uniform(5, 8, size=3)
        blob = (((grid - centre) / radii) ** 2).sum(-1) <= 1.0
        label = blob.astype(np.uint8)
        label[4:6, 4:6, 4:6] = 2
        image = rng.normal(40.0, 10.0, size=shape).astype(np.float32)
        image[blob] += 120.0
        image[:, :, :6] = -1000.0  # "air"
        image[0, 0, 0] = 1500.0  # above the CT clamp
        geo = {"spacing": spacing, "origin": (10.0, -5.0, 3.0), "direction": direction}
        write_volume(Volume(image, **geo), root / "imagesTr" / f"case_{c:03d}_0000.nii.gz")
        write_volume(Volume(label, **geo), root / "labelsTr" / f"case_{c:03d}.nii.gz")
    meta = {
        "channel_names": {"0": modality},
        "labels": {"background": 0, "blob": 1, "speck": 2},
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.fixture()
def nnunet_dataset(tmp_path: Path) -> Path:
    """A 4-case CT dataset (8 targets, 4 of them too small to keep)."""
    return write_nnunet_dataset(tmp_path / "Dataset001_Blobs")


def tiny_overrides(run_dir: Path, *extra: str) -> list[str]:
    """Overrides of the packaged ``tiny_cpu`` config for a seconds-long run."""
    return [f"run.output_dir={run_dir}", *extra]


def write_per_class_copy(data: Path, root: Path) -> Path:
    """The nnU-Net dataset ``data`` (:func:`write_nnunet_dataset`, classes blob 1 and speck 2)
    in the per-class layout ``sammed3d prepare`` writes: one folder per class, each with the
    images (hard links) and that class's binary masks. Returns ``root``."""
    for label_file in sorted((data / "labelsTr").iterdir()):
        case = label_file.name.removesuffix(".nii.gz")
        label = read_volume(label_file)
        for name, value in (("blob", 1), ("speck", 2)):
            folder = root / name / "ct_Blobs"
            (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
            (folder / "imagesTr" / f"{case}.nii.gz").hardlink_to(
                data / "imagesTr" / f"{case}_0000.nii.gz"
            )
            mask = (np.asarray(label.array) == value).astype(np.uint8)
            write_volume(label.with_array(mask), folder / "labelsTr" / f"{case}.nii.gz")
    return root


def dense_click_loop(num_clicks: int = 3, **options: Any) -> ClickLoop:
    """A :class:`ClickLoop` of our regime (accumulated clicks, detached prompt, loss on the
    low-res grid, clicks at logit 0) on ``sam_med3d_tiny_dense`` with seeded weights;
    ``options``: the ClickLoop option under test."""
    torch.manual_seed(0)
    model = build_model("sam_med3d_tiny_dense").train()
    return ClickLoop(
        model,
        num_clicks=num_clicks,
        click_threshold=0.0,
        accumulate_clicks=True,
        detach_mask_prompt=True,
        loss_resolution="low",
        **options,
    )
