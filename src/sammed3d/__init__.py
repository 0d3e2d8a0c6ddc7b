"""sammed3d: promptable 3D medical image segmentation (SAM-Med3D).

Public API::

    from sammed3d import build_model, load_checkpoint
    from sammed3d import SamMed3DPredictor, InteractiveSession   # inference, native space

The names are imported on first use (module ``__getattr__``, PEP 562), so ``import sammed3d``
and ``sammed3d --help`` do not load torch; ``sammed3d.build_model`` and
``from sammed3d import build_model`` work as with eager imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sammed3d._lazy import lazy_exports
from sammed3d._version import __version__

#: Public name -> the module that defines it, imported when the name is first used.
_LAZY_EXPORTS: dict[str, str] = {
    "MODEL_REGISTRY": "sammed3d.build",
    "CheckpointError": "sammed3d.build",
    "build_model": "sammed3d.build",
    "load_checkpoint": "sammed3d.build",
    "save_checkpoint": "sammed3d.build",
    "ModelConfig": "sammed3d.config",
    "InteractiveSession": "sammed3d.inference",
    "SamMed3DPredictor": "sammed3d.inference",
    "Sam3D": "sammed3d.modeling",
}

__all__ = [  # the names of _LAZY_EXPORTS, and the version
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

if TYPE_CHECKING:  # static analysers and IDEs see the real objects
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


__getattr__, __dir__ = lazy_exports(__name__, _LAZY_EXPORTS)
