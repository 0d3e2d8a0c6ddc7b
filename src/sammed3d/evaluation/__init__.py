"""Evaluation: metrics, the click-simulation harness, predictors and reports.

Example::

    from sammed3d.evaluation import EvalConfig, SessionPredictor, evaluate_targets, dice, nsd

``SessionPredictor`` (the model through ``InteractiveSession``) is imported lazily.
"""

from __future__ import annotations

from typing import Any

from sammed3d.evaluation.evaluator import (
    EvalConfig,
    EvalResult,
    evaluate_targets,
    merge_results,
    parse_shard,
    shard_from_env,
)
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
from sammed3d.evaluation.predictors import ClickPredictor, RegionGrowingPredictor, bbox_center


def __getattr__(name: str) -> Any:
    if name == "SessionPredictor":
        from sammed3d.evaluation.session_predictor import SessionPredictor

        return SessionPredictor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "METRIC_NAMES",
    "ClickPredictor",
    "EvalConfig",
    "EvalResult",
    "MetricAccumulator",
    "RegionGrowingPredictor",
    "SessionPredictor",
    "bbox_center",
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
