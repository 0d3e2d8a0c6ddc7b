"""Geometry of an image that arrives over the nnInteractive protocol.

The protocol sends a ``(1, A, B, C)`` array and ``image_properties`` with ``spacing``
(mm per array axis ``A, B, C``) only: no origin, no direction. SAM-Med3D's pre-processing
reorients to RAS before cropping (reference.md §3.1), so the server has to assume one.

Assumption (``axis_order="zyx"``, the default): the array is what 3D Slicer's
``arrayFromVolume`` and SimpleITK's ``GetArrayFromImage`` return, i.e. the ITK index
order reversed, ``array[k, j, i]``, of an image whose ITK direction is the identity (LPS+:
``i`` towards the patient's left, ``j`` posterior, ``k`` superior; the usual axial scan).
SlicerNNInteractive sends exactly this array. ``axis_order="xyz"`` assumes ``array[i, j, k]``
of the same orientation (nibabel's order, e.g. napari with a nibabel-based reader).

Extension: ``image_properties["affine"]``, a ``4 x 4`` matrix mapping the array's voxel
``(a, b, c, 1)`` to RAS+ millimetres (nibabel convention), replaces the assumption. Only the
orientation matters to the model: masks always come back on the grid that was sent, in its
axis order, whatever is assumed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sammed3d.io import Volume, VolumeError

AXIS_ORDERS = ("zyx", "xyz")


def assumed_affine(spacing: Sequence[float], axis_order: str = "zyx") -> np.ndarray:
    """The ``4 x 4`` array-voxel -> RAS+ mm matrix the server assumes without an affine.

    Args:
        spacing: mm per array axis ``(A, B, C)``.
        axis_order: ``"zyx"`` (array is ``[k, j, i]``) or ``"xyz"`` (``[i, j, k]``).
    """
    s = [float(v) for v in spacing]
    affine = np.eye(4)
    if axis_order == "zyx":  # a = k (superior), b = j (posterior), c = i (left)
        affine[:3, :3] = [[0.0, 0.0, -s[2]], [0.0, -s[1], 0.0], [s[0], 0.0, 0.0]]
    elif axis_order == "xyz":  # a = i (left), b = j (posterior), c = k (superior)
        affine[:3, :3] = np.diag([-s[0], -s[1], s[2]])
    else:
        raise ValueError(f"axis_order must be one of {AXIS_ORDERS}, got {axis_order!r}")
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
    image: np.ndarray, properties: Mapping[str, Any] | None, axis_order: str = "zyx"
) -> Volume:
    """The :class:`~sammed3d.io.Volume` of a ``(1, A, B, C)`` protocol image.

    The volume's native ``(i, j, k)`` axes are the array's ``(A, B, C)`` axes (no copy, no
    transposition); its geometry comes from ``properties["affine"]`` if given, else from
    ``properties["spacing"]`` (default 1 mm) and :func:`assumed_affine`.

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
        affine = assumed_affine(spacing or (1.0, 1.0, 1.0), axis_order)
    return Volume.from_affine(image[0], affine)
