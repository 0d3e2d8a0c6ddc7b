"""Synthetic CT-like and MR-like volumes with labelled objects.

Used to teach the bundled demo model generality beyond brains, and as realistic-looking test
data: a body with smooth, irregular "organs" (deformed ellipsoids and tubes), tissue-specific
intensities, texture, bias field, noise and anisotropic spacing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from sammed3d.io import Volume

Modality = Literal["CT", "MR"]


@dataclass
class SyntheticCase:
    """One synthetic case: image, label map (0 background) and class names by value."""

    image: Volume
    label: Volume
    labels: dict[str, int]
    modality: str


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return noise / (noise.std() + 1e-6)


def _blob(
    grid: tuple[np.ndarray, np.ndarray, np.ndarray],
    center: np.ndarray,
    radii: np.ndarray,
    rotation: np.ndarray,
    wobble: np.ndarray,
) -> np.ndarray:
    """Deformed ellipsoid mask; ``wobble`` modulates the radius (same shape as the grid)."""
    pts = np.stack([g - c for g, c in zip(grid, center, strict=True)], axis=-1) @ rotation
    r = np.sqrt(sum((pts[..., i] / radii[i]) ** 2 for i in range(3)))
    return r < 1.0 + 0.25 * wobble


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def make_synthetic_case(
    seed: int,
    modality: Modality = "CT",
    shape: tuple[int, int, int] | None = None,
    spacing: tuple[float, float, float] | None = None,
    n_objects: int | None = None,
) -> SyntheticCase:
    """Generate one case deterministically from ``seed``.

    Args:
        seed: Random seed (same seed, same case).
        modality: ``"CT"`` (Hounsfield-like values, air outside the body) or ``"MR"``
            (arbitrary positive intensities with a bias field).
        shape: Voxel grid; random 80-140 per axis when None.
        spacing: Voxel size in mm; random anisotropic (0.8-2.5 mm) when None.
        n_objects: Number of labelled objects inside the body (random 3-7 when None).

    Returns:
        A :class:`SyntheticCase` whose label values 1..n are ``object_<k>`` and the last one
        is ``body``.
    """
    rng = np.random.default_rng(seed)
    if shape is None:
        shape = tuple(int(v) for v in rng.integers(80, 141, size=3))  # type: ignore[assignment]
    if spacing is None:
        spacing = tuple(float(v) for v in rng.uniform(0.8, 2.5, size=3))  # type: ignore[assignment]
    assert shape is not None and spacing is not None
    if n_objects is None:
        n_objects = int(rng.integers(3, 8))
    sp = np.asarray(spacing)
    # physical-mm grids, so shapes are round in mm whatever the spacing
    grid = tuple(
        np.meshgrid(
            *(np.arange(n, dtype=np.float32) * s for n, s in zip(shape, sp, strict=True)),
            indexing="ij",
        )
    )
    extent = np.asarray(shape) * sp
    wobble = ndimage.zoom(_smooth_noise(rng, (12, 12, 12), 1.5), np.asarray(shape) / 12, order=1)[
        : shape[0], : shape[1], : shape[2]
    ]
    body = _blob(
        grid, extent / 2, extent * rng.uniform(0.38, 0.47, 3), _random_rotation(rng), wobble * 0.3
    )
    label = np.zeros(shape, dtype=np.uint8)
    names: dict[str, int] = {}
    tissue_values: list[float] = []
    k = 0
    for _ in range(n_objects * 3):  # tries
        if k == n_objects:
            break
        radii = rng.uniform(0.07, 0.17, 3) * extent.min() + 4.0
        if rng.random() < 0.25:  # elongated, tube-like
            radii = radii * np.array([2.5, 0.45, 0.45])
        center = extent / 2 + rng.uniform(-0.28, 0.28, 3) * extent
        wob = np.roll(wobble, shift=int(rng.integers(0, 20)), axis=int(rng.integers(0, 3)))
        obj = _blob(grid, center, radii, _random_rotation(rng), wob) & body & (label == 0)
        if obj.sum() < 200:
            continue
        k += 1
        label[obj] = k
        names[f"object_{k}"] = k
        # a clearly visible contrast to the surrounding body, brighter or darker
        tissue_values.append(float(rng.choice([-1.0, 1.0]) * rng.uniform(0.35, 1.0)))
    body_value = k + 1
    label[body & (label == 0)] = body_value
    names["body"] = body_value

    texture = _smooth_noise(rng, shape, 1.2)
    if modality == "CT":
        image = np.full(shape, -1000.0, dtype=np.float32)
        image[body] = 40.0
        for value, contrast in enumerate(tissue_values, start=1):
            hu = 60.0 + 180.0 * contrast if contrast > -0.8 else 900.0  # some bone-like
            image[label == value] = hu
        image += 12.0 * texture * body + rng.normal(0, 15.0, shape).astype(np.float32)
        image = np.clip(image, -1024, 3000)
    else:
        image = np.zeros(shape, dtype=np.float32)
        image[body] = 300.0
        for value, contrast in enumerate(tissue_values, start=1):
            image[label == value] = 300.0 + 220.0 * contrast
        bias = (
            1.0
            + 0.2
            * ndimage.zoom(_smooth_noise(rng, (4, 4, 4), 0.8), np.asarray(shape) / 4, order=1)[
                : shape[0], : shape[1], : shape[2]
            ]
        )
        image = (image + 15.0 * texture * body) * bias
        image += np.abs(rng.normal(0, 10.0, shape)).astype(np.float32)
        image = np.clip(image, 0, None)
    image = ndimage.gaussian_filter(image, 0.6).astype(np.float32)
    img_vol = Volume(image, spacing=tuple(spacing))  # type: ignore[arg-type]
    lab_vol = Volume(label, spacing=tuple(spacing))  # type: ignore[arg-type]
    return SyntheticCase(img_vol, lab_vol, names, modality)
