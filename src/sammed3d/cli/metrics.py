"""``sammed3d metrics``: Dice, IoU, NSD and HD95 of a prediction against a ground truth."""

from __future__ import annotations

import argparse
import json


def _labels(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 1,2, got {text!r}"
        ) from None
    if not values or any(v == 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected non-zero label values, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, help="predicted label map (NIfTI, NRRD, ...)")
    parser.add_argument("--gt", required=True, help="ground-truth label map on the same grid")
    parser.add_argument(
        "--tolerance-mm",
        type=float,
        default=1.0,
        help="NSD tolerance in mm (default 1.0, as the published evaluation)",
    )
    parser.add_argument(
        "--labels",
        type=_labels,
        help="only these label values, e.g. 1,3 (default: every non-zero value of either file)",
    )
    parser.add_argument("--no-hd95", action="store_true", help="skip the 95%% Hausdorff distance")
    parser.add_argument("--output", help="also write the JSON to this file")


def run(args: argparse.Namespace) -> int:
    from sammed3d.evaluation.metrics import (
        METRIC_NAMES,
        json_safe,
        label_map_metrics,
        summarize,
    )
    from sammed3d.io import read_volume

    if not (args.tolerance_mm >= 0 and args.tolerance_mm != float("inf")):
        raise ValueError(f"--tolerance-mm must be a finite number >= 0, got {args.tolerance_mm}")
    gt = read_volume(args.gt)
    pred = read_volume(args.pred)
    names = [m for m in METRIC_NAMES if not (args.no_hd95 and m == "hd95")]
    per_label = label_map_metrics(
        pred, gt, tolerance_mm=args.tolerance_mm, labels=args.labels, metrics=names
    )
    mean = {
        name: summarize(row[name] for row in per_label.values() if row["gt_voxels"] > 0)
        for name in names
    }
    report = {
        "pred": str(args.pred),
        "gt": str(args.gt),
        "spacing_mm": list(gt.spacing),
        "tolerance_mm": args.tolerance_mm,
        "empty_policy": (
            "both empty: NaN (null) for every metric; one empty: dice/iou/nsd 0, hd95 inf (null)"
        ),
        "labels": {str(k): v for k, v in per_label.items()},
        "mean_over_gt_labels": mean,
    }
    text = json.dumps(json_safe(report), indent=2)
    print(text)
    if args.output:
        from sammed3d.evaluation.reports import atomic_write_text

        atomic_write_text(args.output, text + "\n")
    return 0
