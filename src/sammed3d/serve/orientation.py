"""Geometry of an image that arrives over the nnInteractive protocol.

The protocol sends a ``(1, A, B, C)`` array and ``image_properties`` with ``spacing``
(mm per array axis ``A, B, C``) only: no origin, no direction. SAM-Med3D's pre-processing
reorients to RAS before cropping (docs/faithfulness.md §5), so the server has to assume which
anatomical direction each array axis points to. It is given as an orientation code: one
letter per array axis naming the direction its index increases towards (R/L, A/P, S/I).

* ``"SPL"`` (the default): what 3D Slicer's ``arrayFromVolume`` (and SimpleITK's
  ``GetArrayFromImage``) return for the usual axial scan, whose ITK direction is the
  identity: ``array[k, j, i]`` with ``k`` superior, ``j`` posterior, ``i`` left.
  SlicerNNInteractive sends this array.
* ``"SAR"``: napari-nninteractive with its ``napari-nifti`` reader, which loads volumes
  reoriented to "SAR+".
* ``"RAS"``: nibabel's canonical ``array[i, j, k]``; ``"LPS"``: ITK's identity direction in
  ``[i, j, k]`` order.

Extension: ``image_properties["affine"]``, a ``4 x 4`` matrix mapping the array's voxel
``(a, b, c, 1)`` to RAS+ millimetres (nibabel convention), replaces the assumption. Only the
orientation matters to the model: masks always come back on the grid that was sent, in its
axis order, whatever is assumed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sammed3d.io import Volume, VolumeError

logger = logging.getLogger(__name__)

#: Direction letter -> RAS+ unit vector.
_AXES = {
    "R": (1.0, 0.0, 0.0),
    "L": (-1.0, 0.0, 0.0),
    "A": (0.0, 1.0, 0.0),
    "P": (0.0, -1.0, 0.0),
    "S": (0.0, 0.0, 1.0),
    "I": (0.0, 0.0, -1.0),
}
DEFAULT_ORIENTATION = "SPL"


def parse_orientation(code: str) -> str:
    """An upper-case 3-letter orientation code with one letter of each of R/L, A/P, S/I.

    Raises:
        ValueError: anything else.
    """
    text = str(code).strip().upper()
    pairs = [set(p) for p in ("RL", "AP", "SI")]
    if (
        len(text) != 3
        or any(c not in _AXES for c in text)
        or any(sum(c in pair for c in text) != 1 for pair in pairs)
    ):
        raise ValueError(
            f"orientation must be 3 letters, one each of R/L, A/P and S/I (e.g. SPL, SAR, RAS), "
            f"got {code!r}"
        )
    return text


def assumed_affine(spacing: Sequence[float], orientation: str = DEFAULT_ORIENTATION) -> np.ndarray:
    """The ``4 x 4`` array-voxel -> RAS+ mm matrix assumed without an affine (origin 0).

    Args:
        spacing: mm per array axis ``(A, B, C)``.
        orientation: Where each array axis points (see the module docstring).
    """
    code = parse_orientation(orientation)
    affine = np.eye(4)
    for n, letter in enumerate(code):
        affine[:3, n] = np.asarray(_AXES[letter]) * float(spacing[n])
    return affine


def parse_spacing(value: Any) -> tuple[float, float, float]:
    """Three positive finite numbers, or a :class:`~sammed3d.io.VolumeError`."""
    try:
        spacing = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise VolumeError(f"spacing must be three numbers in mm, got {value!r}") from None
    if len(spacing) != 3 or not all(np.isfinite(v) and v > 0 for v in spacing):
        raise VolumeError(f"spacing must be three positive numbers in mm, got {list(spacing)}")
    return spacing  # type: ignore[return-value]


def parse_affine(value: Any) -> np.ndarray:
    """A finite ``4 x 4`` matrix with last row ``0 0 0 1``, or a VolumeError."""
    try:
        affine = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise VolumeError("affine must be a 4x4 matrix of numbers (a list of 4 rows)") from None
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise VolumeError(f"affine must be a finite 4x4 matrix, got shape {affine.shape}")
    if not np.allclose(affine[3], [0.0, 0.0, 0.0, 1.0]):
        raise VolumeError(f"affine's last row must be [0, 0, 0, 1], got {affine[3].tolist()}")
    return affine


def protocol_volume(
    image: np.ndarray,
    properties: Mapping[str, Any] | None,
    orientation: str = DEFAULT_ORIENTATION,
) -> Volume:
    """The :class:`~sammed3d.io.Volume` of a ``(1, A, B, C)`` protocol image.

    The volume's native ``(i, j, k)`` axes are the array's ``(A, B, C)`` axes (no copy, no
    transposition); its geometry comes from ``properties["affine"]`` if given, else from
    ``properties["spacing"]`` (default 1 mm) and :func:`assumed_affine` of ``orientation``.

    Raises:
        VolumeError: not 4-D with one channel, bad spacing/affine, or the two disagree.
    """
    if image.ndim != 4:
        raise VolumeError(
            f"image must be 4-D (1, x, y, z) as nnInteractive sends it, got shape "
            f"{list(image.shape)}"
        )
    if image.shape[0] != 1:
        raise VolumeError(
            f"image has {image.shape[0]} channels; SAM-Med3D segments single-channel images"
        )
    props = dict(properties or {})
    spacing = parse_spacing(props["spacing"]) if props.get("spacing") is not None else None
    if props.get("affine") is not None:
        affine = parse_affine(props["affine"])
        norms = np.linalg.norm(affine[:3, :3], axis=0)
        if spacing is not None and not np.allclose(norms, spacing, rtol=1e-3, atol=1e-6):
            raise VolumeError(
                f"spacing {list(spacing)} disagrees with the affine's column lengths "
                f"{[round(float(v), 6) for v in norms]}"
            )
    else:
        if spacing is None:  # the model resamples to 1.5 mm: a wrong guess changes the mask
            logger.warning(
                "set_image without image_properties.spacing (or an affine): 1 mm voxels "
                "assumed; send the spacing for masks at the image's true scale"
            )
        affine = assumed_affine(spacing or (1.0, 1.0, 1.0), orientation)
    return Volume.from_affine(image[0], affine)
