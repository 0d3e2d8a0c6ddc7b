"""sammed3d: promptable 3D medical image segmentation (SAM-Med3D).

Public API::

    from sammed3d import build_model, load_checkpoint
    from sammed3d import SamMed3DPredictor, InteractiveSession   # inference, native space
"""

from sammed3d.build import (
    MODEL_REGISTRY,
    CheckpointError,
    build_model,
    load_checkpoint,
    save_checkpoint,
)
from sammed3d.config import ModelConfig
from sammed3d.inference import InteractiveSession, SamMed3DPredictor
from sammed3d.modeling import Sam3D

__version__ = "0.1.0"

__all__ = [
    "MODEL_REGISTRY",
    "CheckpointError",
    "InteractiveSession",
    "ModelConfig",
    "Sam3D",
    "SamMed3DPredictor",
    "__version__",
    "build_model",
    "load_checkpoint",
    "save_checkpoint",
]
