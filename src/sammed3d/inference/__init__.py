"""Inference on real volumes: native-space predictor, interactive session, ROI geometry.

Axis conventions are defined in :mod:`sammed3d.inference.geometry`.
"""

from sammed3d.inference.extend import Tile
from sammed3d.inference.geometry import Grid, Lattice, RoiGrid
from sammed3d.inference.predictor import Prediction, SamMed3DPredictor, read_modality
from sammed3d.inference.session import Click, Extent, InteractiveSession

__all__ = [
    "Click",
    "Extent",
    "Grid",
    "InteractiveSession",
    "Lattice",
    "Prediction",
    "RoiGrid",
    "SamMed3DPredictor",
    "Tile",
    "read_modality",
]
