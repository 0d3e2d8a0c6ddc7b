"""``sammed3d metrics``: Dice, IoU, NSD and HD95 of a prediction against a ground truth.

Both files must be integer label maps on the same grid. HD95 of a label one file lacks is the
image diagonal in mm (``hd95_worst_case_mm``), so a missed structure never improves the mean.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from sammed3d.cli import add_overwrite_arg

if TYPE_CHECKING:
    import numpy as np


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
    parser.add_argument("-o", "--output", help="also write the JSON to this file")
    add_overwrite_arg(parser, "--output")


def run(args: argparse.Namespace) -> int:
    from sammed3d.evaluation.metrics import (
        METRIC_NAMES,
        json_safe,
        label_map_metrics,
        summarize,
        worst_case_distance_mm,
    )
    from sammed3d.io import check_output_file, read_volume

    if not (args.tolerance_mm >= 0 and args.tolerance_mm != float("inf")):
        raise ValueError(f"--tolerance-mm must be a finite number >= 0, got {args.tolerance_mm}")
    if args.output:
        check_output_file(args.output, overwrite=args.overwrite, protect=(args.pred, args.gt))
    gt = read_volume(args.gt)
    pred = read_volume(args.pred)
    names = [m for m in METRIC_NAMES if not (args.no_hd95 and m == "hd95")]
    per_label = label_map_metrics(  # both must be label maps: an error names the flag
        pred,
        gt,
        tolerance_mm=args.tolerance_mm,
        labels=args.labels,
        metrics=names,
        names=("--pred", "--gt"),
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
            "both empty: NaN (null) for every metric; one empty: dice/iou/nsd 0, hd95 the "
            "image diagonal (hd95_worst_case_mm)"
        ),
        "hd95_worst_case_mm": worst_case_distance_mm(gt.shape, gt.spacing),
        "labels": {str(k): v for k, v in per_label.items()},
        "mean_over_gt_labels": mean,
    }
    notes = [
        _disjoint_note(
            [k for k, row in per_label.items() if row["pred_voxels"]],
            [k for k, row in per_label.items() if row["gt_voxels"]],
        )
    ]
    absent = [k for k, row in per_label.items() if not row["pred_voxels"] and not row["gt_voxels"]]
    if args.labels and absent:  # asked for by name: a typo must not pass as "both empty"
        notes.append(
            f"--labels {', '.join(str(k) for k in absent)}: in neither file (--pred holds "
            f"{_label_list(_labels_in(pred.array))}, --gt holds "
            f"{_label_list(_labels_in(gt.array))}); their metrics are null"
        )
        print(f"warning: {notes[-1]}", file=sys.stderr)  # scripts may read only the numbers
    unmatched = [k for k, row in per_label.items() if row["gt_voxels"] and not row["pred_voxels"]]
    if args.labels and unmatched:  # asked for, but the prediction holds another value
        print(
            f"note: --labels {', '.join(str(k) for k in unmatched)}: in --gt but not in --pred "
            f"(it holds {_label_list(_labels_in(pred.array))}), so they score 0; a mask written "
            "with another value scores under that value (segment --label N writes it as N)",
            file=sys.stderr,
        )
    if any(notes):
        report["note"] = "; ".join(n for n in notes if n)
    if not args.labels:  # a mask of one structure against a whole atlas: the mean hides it
        one = _one_label_note(
            [k for k, row in per_label.items() if row["pred_voxels"]],
            [k for k, row in per_label.items() if row["gt_voxels"]],
        )
        if one:
            print(f"note: {one}", file=sys.stderr)  # the JSON stays the numbers
    text = json.dumps(json_safe(report), indent=2)
    if args.output:  # first: a closed pipe on stdout must not lose the file
        from sammed3d.io import atomic_write_text

        atomic_write_text(args.output, text + "\n")
    print(text)
    return 0


def _disjoint_note(pred_labels: list[int], gt_labels: list[int]) -> str | None:
    """One line when both files hold labels but none in common (a mask written with label 1
    against an atlas whose structure is label 3 scores Dice 0 for a reason the numbers hide)."""
    if not pred_labels or not gt_labels or set(pred_labels) & set(gt_labels):
        return None
    return (
        f"--pred and --gt have no label in common: --pred holds {_label_list(pred_labels)}, "
        f"--gt holds {_label_list(gt_labels)}; a structure must have the same value in both "
        "files to be compared (relabel one)"
    )


def _one_label_note(pred_labels: list[int], gt_labels: list[int]) -> str | None:
    """One line when --pred holds one label that --gt also holds, and --gt holds more (a
    ``segment`` mask of one structure against a multi-label ground truth: the other labels
    count as misses in ``mean_over_gt_labels``); how to score that structure alone."""
    if len(pred_labels) != 1 or pred_labels[0] not in gt_labels or len(gt_labels) < 2:
        return None
    (label,) = pred_labels
    missed = [v for v in gt_labels if v != label]
    return (
        f"--pred holds only label {label}, --gt holds {_label_list(gt_labels)}: "
        f"{_label_list(missed)} count as misses in mean_over_gt_labels; to score the one "
        f"structure pass --labels {label} (a mask of another --gt structure: write it with "
        "that value, `sammed3d segment ... --label N`, and pass --labels N)"
    )


def _labels_in(array: np.ndarray) -> list[int]:
    """The non-zero values of a label map, ascending."""
    import numpy as np

    return [int(v) for v in np.unique(array) if v != 0]


def _label_list(labels: list[int], limit: int = 8) -> str:
    if not labels:
        return "no label"
    shown = ", ".join(str(v) for v in labels[:limit])
    more = f", ... ({len(labels)} labels)" if len(labels) > limit else ""
    word = "label" if len(labels) == 1 else "labels"
    return f"{word} {shown}{more}"
