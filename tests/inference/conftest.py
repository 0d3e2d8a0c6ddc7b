"""Fixtures for inference tests: synthetic volumes with known geometry and an oracle model.

The oracle stands in for SAM-Med3D with the same interface (``encode``, ``decode``,
``upsample_logits``, ``img_size``, ``low_res_size``). It segments what a perfect model
would, *from the ROI tensor it is given*: the bright connected region under the newest
positive click (points read in tensor-axis order), united with the previous mask prompt,
minus a ball around each negative click. A wrong axis order, flip or offset anywhere
between native space and the model therefore shows up as a wrong native mask.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.spatial.transform import Rotation

from sammed3d.io import Volume

NEGATIVE_RADIUS = 3  # ROI voxels carved around a negative click


class OracleModel(torch.nn.Module):
    """Fake model; ``low_res_factor`` 1 keeps full resolution (exact boundaries)."""

    def __init__(self, img_size: int = 32, low_res_factor: int = 1) -> None:
        super().__init__()
        self._dummy = torch.nn.Parameter(torch.zeros(1))
        self.img_size = img_size
        self.low_res_size = (img_size // low_res_factor,) * 3
        self.encoder_calls = 0
        self.decode_calls: list[dict[str, torch.Tensor]] = []

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape == (1, 1, self.img_size, self.img_size, self.img_size)
        self.encoder_calls += 1
        return x.clone()

    def decode(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor | None,
        multimask_output: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.decode_calls.append(
            {
                "coords": point_coords.clone(),
                "labels": point_labels.clone(),
                "mask_input": None if mask_input is None else mask_input.clone(),
            }
        )
        img = image_embeddings[0, 0].numpy()
        size = self.img_size
        if mask_input is not None:
            prev = self.upsample_logits(mask_input)[0, 0].numpy() > 0
        else:
            prev = np.zeros(img.shape, dtype=bool)
        out = prev.copy()
        fg = img > (img.max() + img.min()) / 2
        comps, _ = ndimage.label(fg)
        grid = np.indices(img.shape)
        for p, lab in zip(point_coords[0].tolist(), point_labels[0].tolist(), strict=True):
            r = [int(round(v)) for v in p]
            assert all(0 <= v < size for v in r), f"prompt {r} outside the {size}^3 ROI"
            if lab == 1:
                c = comps[tuple(r)]
                if c:
                    out |= comps == c
            elif lab == 0:
                ball = sum((grid[a] - r[a]) ** 2 for a in range(3)) <= NEGATIVE_RADIUS**2
                out &= ~ball
        logits = torch.from_numpy(np.where(out, 10.0, -10.0).astype(np.float32))[None, None]
        low = F.interpolate(logits, size=self.low_res_size, mode="trilinear", align_corners=False)
        return low, torch.ones(1, 1)

    def upsample_logits(self, low_res: torch.Tensor) -> torch.Tensor:
        size = (self.img_size,) * 3
        return F.interpolate(low_res, size=size, mode="trilinear", align_corners=False)


def rotation(deg: tuple[float, float, float]) -> np.ndarray:
    return Rotation.from_euler("xyz", deg, degrees=True).as_matrix()


#: (name, shape, spacing, direction): anisotropic, oblique, LPS/RAS-stored, permuted, odd.
GEOMETRIES = {
    "lps_aniso": ((41, 35, 19), (0.9, 1.1, 2.5), np.eye(3)),
    "ras_stored": ((38, 44, 21), (1.2, 0.8, 2.0), np.diag([-1.0, -1.0, 1.0])),
    "oblique": ((37, 39, 23), (1.0, 1.3, 1.9), rotation((17.0, -11.0, 28.0))),
    "permuted_flipped": (
        (23, 43, 33),
        (2.2, 0.9, 1.2),
        np.array([[0.0, -1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]]),
    ),
}


def make_phantom(
    geometry: str,
    *,
    shapes: Callable[[np.ndarray], np.ndarray] | None = None,
    seed: int = 0,
    origin: tuple[float, float, float] = (12.0, -30.0, 7.5),
) -> tuple[Volume, np.ndarray]:
    """Noisy background (~100) with bright objects (~300) defined in physical space.

    Returns the volume and the ``(I, J, K, 3)`` LPS positions of its voxels.
    """
    shape, spacing, direction = GEOMETRIES[geometry]
    base = Volume(np.zeros(shape, np.float32), spacing, origin, direction)
    xyz = base.index_to_physical(np.indices(shape).transpose(1, 2, 3, 0))
    rng = np.random.default_rng(seed)
    img = 100 + rng.uniform(0, 8, size=shape)
    if shapes is not None:
        img = np.where(shapes(xyz), 300 + rng.uniform(0, 8, size=shape), img)
    return base.with_array(img.astype(np.float32)), xyz


def make_rod() -> tuple[Volume, np.ndarray, np.ndarray]:
    """A 300 mm bright rod along native ``i`` (radius 9 mm) in a 60 x 14 x 14 volume with
    6 x 3 x 3 mm voxels: longer than three 96 mm ROIs (32 voxels on a 3 mm lattice).

    Returns the volume, the rod's ``(I, J, K)`` mask and each voxel's distance (mm) to the
    rod's axis.
    """
    shape, spacing = (60, 14, 14), (6.0, 3.0, 3.0)
    base = Volume(np.zeros(shape, np.float32), spacing)
    xyz = base.index_to_physical(np.indices(shape).transpose(1, 2, 3, 0))
    radial = np.linalg.norm((xyz - np.array([0.0, 19.5, 19.5]))[..., 1:], axis=-1)
    rod = (radial <= 9.0) & (xyz[..., 0] >= 30.0) & (xyz[..., 0] <= 330.0)
    img = np.where(rod, 300.0, 100.0) + np.random.default_rng(1).uniform(0, 8, shape)
    return base.with_array(img.astype(np.float32)), rod, radial


def volume_center(volume: Volume) -> np.ndarray:
    return volume.index_to_physical((np.asarray(volume.shape) - 1) / 2)


@pytest.fixture()
def lab() -> SimpleNamespace:
    """Helpers: ``OracleModel``, ``make_phantom``, ``make_rod``, ``volume_center``,
    ``GEOMETRIES``."""
    return SimpleNamespace(
        OracleModel=OracleModel,
        make_phantom=make_phantom,
        make_rod=make_rod,
        volume_center=volume_center,
        GEOMETRIES=GEOMETRIES,
    )
