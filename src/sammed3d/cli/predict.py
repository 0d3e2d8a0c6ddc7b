"""``sammed3d predict``: whole-volume multi-class segmentation with a task model.

Examples::

    sammed3d predict --checkpoint runs/liver/checkpoints/final.pth ct.nii.gz -o labels.nii.gz
    sammed3d predict --checkpoint runs/liver --data /data/Dataset001_Liver -o results/liver

A task model is the SAM-Med3D image encoder with a UNETR decoder, trained with
``sammed3d train --config semantic`` (docs/transfer.md). The first form writes a label map on
the input's grid (label ``i + 1`` = class ``i`` of the checkpoint); the second predicts every
case of a labelled dataset and scores it (Dice, NSD per class: ``per_case.csv``,
``summary.json``, ``dice_per_class.png``, ``predictions/``).
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

from sammed3d.cli import (
    add_device_arg,
    add_irregular_slices_arg,
    add_modality_arg,
    add_overwrite_arg,
)

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "image", nargs="?", help="NIfTI/NRRD/MHA file or a DICOM series folder (or use --data)"
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="task-model checkpoint (.pth written by `sammed3d train` with task.kind=semantic) "
        "or its training run folder (the newest checkpoint)",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        help="label map file (.nii.gz, .nii, .nrrd, .mha); with --data: the results folder",
    )
    add_overwrite_arg(parser)
    parser.add_argument(
        "--data",
        metavar="DATASET",
        help="predict and score every case of a labelled dataset (nnU-Net/MSD, ...) instead",
    )
    parser.add_argument(
        "--split",
        choices=("auto", "train", "test"),
        default="auto",
        help="with --data: which split (auto: the held-out one if labelled)",
    )
    parser.add_argument(
        "--tolerance-mm", type=float, default=1.0, help="with --data: NSD tolerance (default 1)"
    )
    parser.add_argument(
        "--no-predictions",
        action="store_true",
        help="with --data: do not write the predicted label maps",
    )
    add_modality_arg(
        parser,
        "image modality; CT clamps intensities (default: the file's metadata, else the "
        "modality the model was trained on)",
    )
    parser.add_argument(
        "--overlap",
        type=float,
        help="sliding-window overlap in [0, 1) (default: the checkpoint's, 0.5)",
    )
    parser.add_argument(
        "--allow-label-image",
        action="store_true",
        help="accept an image with only a few distinct values (it looks like a label map)",
    )
    add_irregular_slices_arg(parser, "the label map is then written on that grid")
    add_device_arg(parser)
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")


def _cases_scored(summary: dict[str, Any]) -> str:
    """``"2 cases (1 skipped)"``: the images scored (each once) and those skipped."""
    n, skipped = summary["cases"], len(summary.get("skipped") or ())
    return f"{n} case{'' if n == 1 else 's'}" + (f" ({skipped} skipped)" if skipped else "")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from sammed3d.cli import CLIError, CommandFailed
    from sammed3d.devices import resolve_device
    from sammed3d.io import check_output_file, check_volume_name

    if (args.image is None) == (args.data is None):
        raise CLIError("give either an IMAGE or --data DATASET (not both)")
    if args.overlap is not None and not 0.0 <= args.overlap < 1.0:
        raise CLIError(f"--overlap must be in [0, 1), got {args.overlap}")
    if args.threads is not None:
        if args.threads < 1:
            raise CLIError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    # everything that can be checked before the work: output, device
    if args.data is None:
        check_volume_name(args.output)
        check_output_file(args.output, overwrite=args.overwrite, protect=(args.image,))
    else:
        from sammed3d.task.evaluation import check_output_dir

        check_output_dir(args.output, overwrite=args.overwrite)
    device = resolve_device(args.device)

    from sammed3d.task.predictor import TaskPredictor

    t0 = time.perf_counter()
    # resolves --checkpoint (a file or a run folder's newest checkpoint) once
    predictor = TaskPredictor.from_checkpoint(args.checkpoint, device, overlap=args.overlap)
    ckpt = predictor.model.checkpoint_path
    spec = predictor.spec
    origin = spec.encoder_origin
    source = origin.get("checkpoint") if origin.get("init") == "checkpoint" else "scratch"
    print(
        f"loaded {ckpt} on {device} ({time.perf_counter() - t0:.2f} s): classes "
        f"{', '.join(f'{i + 1}={c}' for i, c in enumerate(spec.classes))}; encoder "
        f"{spec.encoder_name or 'custom'} from {source}"
    )
    if args.data is not None:
        from sammed3d.task.evaluation import evaluate_task

        summary = evaluate_task(
            predictor,
            args.data,
            args.output,
            split=args.split,
            tolerance_mm=args.tolerance_mm,
            write_predictions=not args.no_predictions,
            overwrite=args.overwrite,
            checkpoint=str(ckpt),
        )
        for name in spec.classes:
            dice = summary["per_class"][name]["dice"]
            if dice["n"]:
                print(f"{name}: Dice {dice['mean']:.3f} ± {dice['std']:.3f} (n={dice['n']})")
        if summary["mean_dice"] is None:
            raise CommandFailed(f"no class was scored in {args.data}")
        scored = [n for n in spec.classes if summary["per_class"][n]["dice"]["n"]]
        over = (
            f"over classes ({len(scored)} of {len(spec.classes)}: {', '.join(scored)})"
            if len(scored) < len(spec.classes)
            else "over classes"
        )
        print(
            f"mean Dice {over} {summary['mean_dice']:.3f} on {_cases_scored(summary)}; "
            f"results in {args.output}"
        )
        return 0

    from sammed3d.inference import read_modality
    from sammed3d.inference.validation import load_image
    from sammed3d.io import write_volume

    volume = load_image(
        args.image,
        allow_label_like=args.allow_label_image,
        irregular_slices=args.irregular_slices,
    )
    modality = args.modality or read_modality(args.image)
    source = (
        "--modality" if args.modality else "the file" if modality else "the model's training data"
    )
    used = modality or spec.modality
    clamp = (
        f"; intensities clamped to [{spec.ct_clamp[0]:g}, {spec.ct_clamp[1]:g}]"
        if used == "CT" and spec.ct_clamp is not None
        else ""
    )
    print(f"modality: {used or 'not set'} (from {source}){clamp}")
    t0 = time.perf_counter()
    labels = predictor.predict(volume, modality=modality)
    counts = np.bincount(np.asarray(labels.array).ravel(), minlength=spec.num_classes + 1)
    out = write_volume(labels, args.output, protect=(args.image,), overwrite=args.overwrite)
    voxel_ml = float(np.prod(volume.spacing)) / 1000.0
    found = ", ".join(
        f"{name} {counts[i + 1] * voxel_ml:.1f} ml" for i, name in enumerate(spec.classes)
    )
    print(f"wrote {out} ({time.perf_counter() - t0:.2f} s): {found}")
    empty = [name for i, name in enumerate(spec.classes) if counts[i + 1] == 0]
    if empty:
        logger.warning("warning: no voxel of %s was predicted", ", ".join(empty))
    return 0
