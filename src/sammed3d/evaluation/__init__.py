"""Evaluation: metrics, the click-simulation harness, click methods and reports.

Example::

    from sammed3d.evaluation import EvalConfig, ModelMethod, evaluate_targets, dice, nsd

The names are imported on first use (module ``__getattr__``, PEP 562), so
``sammed3d.evaluation.config`` (what ``sammed3d evaluate --help`` reads) loads no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sammed3d._lazy import lazy_exports

#: Public name -> the module that defines it, imported when the name is first used.
_LAZY_EXPORTS: dict[str, str] = {
    "EvalConfig": "sammed3d.evaluation.config",
    "EvalResult": "sammed3d.evaluation.evaluator",
    "evaluate_targets": "sammed3d.evaluation.evaluator",
    "merge_results": "sammed3d.evaluation.evaluator",
    "parse_shard": "sammed3d.evaluation.evaluator",
    "shard_from_env": "sammed3d.evaluation.evaluator",
    "ClickMethod": "sammed3d.evaluation.methods",
    "ModelMethod": "sammed3d.evaluation.methods",
    "RegionGrowing": "sammed3d.evaluation.methods",
    "METRIC_NAMES": "sammed3d.evaluation.metrics",
    "MetricAccumulator": "sammed3d.evaluation.metrics",
    "compute_metrics": "sammed3d.evaluation.metrics",
    "dice": "sammed3d.evaluation.metrics",
    "hd95": "sammed3d.evaluation.metrics",
    "iou": "sammed3d.evaluation.metrics",
    "label_map_metrics": "sammed3d.evaluation.metrics",
    "nsd": "sammed3d.evaluation.metrics",
}

__all__ = [  # the names of _LAZY_EXPORTS
    "METRIC_NAMES",
    "ClickMethod",
    "EvalConfig",
    "EvalResult",
    "MetricAccumulator",
    "ModelMethod",
    "RegionGrowing",
    "compute_metrics",
    "dice",
    "evaluate_targets",
    "hd95",
    "iou",
    "label_map_metrics",
    "merge_results",
    "nsd",
    "parse_shard",
    "shard_from_env",
]

if TYPE_CHECKING:  # static analysers and IDEs see the real objects
    from sammed3d.evaluation.config import EvalConfig
    from sammed3d.evaluation.evaluator import (
        EvalResult,
        evaluate_targets,
        merge_results,
        parse_shard,
        shard_from_env,
    )
    from sammed3d.evaluation.methods import ClickMethod, ModelMethod, RegionGrowing
    from sammed3d.evaluation.metrics import (
        METRIC_NAMES,
        MetricAccumulator,
        compute_metrics,
        dice,
        hd95,
        iou,
        label_map_metrics,
        nsd,
    )


__getattr__, __dir__ = lazy_exports(__name__, _LAZY_EXPORTS)
