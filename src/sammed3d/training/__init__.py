"""Training and fine-tuning: the published click-simulation regime, torchrun DDP, resumable runs.

Public API::

    from sammed3d.training import TrainingConfig, load_config, train

See ``docs/training.md`` for the regime, the configuration keys and the launch commands.
"""

from sammed3d.training.config import ConfigError, TrainingConfig, load_config, save_config
from sammed3d.training.trainer import Trainer, TrainResult, find_latest_checkpoint, train

__all__ = [
    "ConfigError",
    "TrainResult",
    "Trainer",
    "TrainingConfig",
    "find_latest_checkpoint",
    "load_config",
    "save_config",
    "train",
]
