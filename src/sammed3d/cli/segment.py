"""``sammed3d segment``: segment one object of a volume from clicks, write a mask file.

Example::

    sammed3d segment ct.nii.gz --point 250 261 140 --negative 262 255 141 \\
        --checkpoint sam_med3d_turbo.pth --output liver.nii.gz

Points are native voxel indices ``I J K`` of the image (the order of ITK-SNAP, 3D Slicer's
"IJK" and nibabel; see ``sammed3d.inference.geometry``), or physical millimetres with
``--coords ras`` / ``--coords lps``. Clicks are applied one per step in the order given, as
in the published interaction (``--accumulate`` gives every click at each step).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from sammed3d.cli import (
    add_device_arg,
    add_extension_args,
    add_overwrite_arg,
    add_unsafe_pickle_arg,
    check_max_rois,
)

logger = logging.getLogger(__name__)


class _ClickAction(argparse.Action):
    """Collect ``--point``/``--negative`` in command-line order as ``(xyz, positive)``."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        clicks = list(getattr(namespace, self.dest, None) or [])
        coords = tuple(values or ())
        clicks.append((coords, option_string in ("--point", "-p")))
        setattr(namespace, self.dest, clicks)


def _coordinate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="NIfTI/NRRD/MHA file or a DICOM series folder")
    parser.add_argument(
        "-p",
        "--point",
        dest="clicks",
        nargs=3,
        type=_coordinate,
        metavar=("I", "J", "K"),
        action=_ClickAction,
        help="a positive click (repeatable); native voxel indices unless --coords says mm",
    )
    parser.add_argument(
        "-n",
        "--negative",
        dest="clicks",
        nargs=3,
        type=_coordinate,
        metavar=("I", "J", "K"),
        action=_ClickAction,
        help="a negative (background) click (repeatable)",
    )
    parser.add_argument(
        "-o", "--output", required=True, help="mask file (.nii.gz, .nii, .nrrd or .mha)"
    )
    add_overwrite_arg(parser)
    parser.add_argument(
        "--checkpoint",
        help="model checkpoint: a file or a published name (turbo, sam_med3d, default; see "
        "`sammed3d weights`); default: $SAMMED3D_CHECKPOINT, then the bundled weights",
    )
    add_unsafe_pickle_arg(parser)
    parser.add_argument(
        "--coords",
        choices=("voxel", "ras", "lps"),
        default="voxel",
        help="how points are given: native voxel indices (default) or world mm (RAS as in "
        "3D Slicer/nibabel, LPS as in ITK/DICOM)",
    )
    parser.add_argument(
        "--modality",
        help="image modality; CT clamps intensities to [-1000, 1000] (default: from the file's "
        "metadata when it has one, else no clamp)",
    )
    parser.add_argument("--label", type=int, default=1, help="value of the object in the mask")
    parser.add_argument(
        "--accumulate",
        action="store_true",
        default=None,
        help="give the model every click at each step (default: what the model was trained "
        "with: the newest click + previous mask for the published models)",
    )
    add_extension_args(
        parser, "do not extend objects larger than one 192 mm ROI into neighbouring ROIs"
    )
    parser.add_argument(
        "--allow-label-image",
        action="store_true",
        help="accept an image with only a few integer values (it looks like a label map)",
    )
    parser.add_argument(
        "--irregular-slices",
        choices=("error", "resample"),
        default="error",
        help="a DICOM series with unevenly spaced slices (one missing, say): refuse it "
        "(default), or resample it onto a regular grid through the true slice positions "
        "(the mask is then written on that grid)",
    )
    add_device_arg(parser)
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")


def _check_output_name(path: str) -> None:
    from sammed3d.io import WRITE_SUFFIXES, volume_suffix

    if volume_suffix(path) not in WRITE_SUFFIXES:
        raise ValueError(
            f"cannot write {os.path.basename(path)!r}: the output must end in .nii.gz, .nii, "
            ".nrrd or .mha"
        )


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from sammed3d.cli import CLIError
    from sammed3d.devices import resolve_device
    from sammed3d.inference import InteractiveSession, SamMed3DPredictor, read_modality
    from sammed3d.inference.validation import load_image
    from sammed3d.io import check_output_file
    from sammed3d.paths import require_checkpoint

    t_start = time.perf_counter()
    clicks = args.clicks or []
    if not clicks:
        raise CLIError("give at least one click: --point I J K")
    if not clicks[0][1]:
        raise CLIError("the first click must be positive (--point), it places the ROI")
    if args.label < 1 or args.label > 65535:
        raise CLIError(f"--label must be in 1..65535, got {args.label}")
    check_max_rois(args.max_rois)
    _check_output_name(args.output)
    # everything that can be checked before the work: output, device, checkpoint
    check_output_file(args.output, overwrite=args.overwrite, protect=(args.image,))
    if args.threads is not None:
        if args.threads < 1:
            raise CLIError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    device = str(resolve_device(args.device))
    ckpt = require_checkpoint(args.checkpoint)

    t0 = time.perf_counter()
    volume = load_image(
        args.image,
        allow_label_like=args.allow_label_image,
        irregular_slices=args.irregular_slices,
    )
    print(
        f"read {args.image}: shape {volume.shape}, spacing "
        f"{tuple(round(s, 3) for s in volume.spacing)} mm ({time.perf_counter() - t0:.2f} s)"
    )
    points = np.asarray([xyz for xyz, _ in clicks], dtype=np.float64)
    if args.coords != "voxel":
        lps = points * (np.array([-1.0, -1.0, 1.0]) if args.coords == "ras" else 1.0)
        points = volume.physical_to_index(lps)
    shape = np.asarray(volume.shape)
    for n, ijk in enumerate(points, start=1):
        voxel = np.floor(np.round(ijk, 6) + 0.5)
        if np.any(voxel < 0) or np.any(voxel > shape - 1):
            given = " ".join(f"{v:g}" for v in clicks[n - 1][0])
            raise CLIError(
                f"click {n} ({given}{'' if args.coords == 'voxel' else ' mm ' + args.coords}) is "
                f"outside the image: voxel indices must lie in [0, {shape[0] - 1}] x "
                f"[0, {shape[1] - 1}] x [0, {shape[2] - 1}]"
            )
    modality = args.modality or read_modality(args.image)

    t0 = time.perf_counter()
    predictor = SamMed3DPredictor.from_checkpoint(
        ckpt,
        device,
        allow_unsafe_pickle=args.allow_unsafe_pickle,
        extend=not args.no_extend,
        max_rois=args.max_rois,
    )
    print(f"loaded {ckpt} on {device} ({time.perf_counter() - t0:.2f} s)")

    session = InteractiveSession(predictor, accumulate_clicks=args.accumulate)
    session.set_image(volume, modality=modality, allow_label_like=args.allow_label_image)
    print(f"modality: {predictor.modality or 'not CT (no clamp)'}")
    session.new_object(args.label)
    mask = None
    for n, (ijk, (_, positive)) in enumerate(zip(points, clicks, strict=True), start=1):
        t0 = time.perf_counter()
        mask = session.add_point(tuple(float(v) for v in ijk), positive=positive)
        voxel = tuple(int(v) for v in np.floor(np.round(ijk, 6) + 0.5))
        print(
            f"click {n}/{len(clicks)} {'+' if positive else '-'} at {voxel}: "
            f"{int(mask.sum())} voxels, {len(session.tiles)} ROI(s) "
            f"({time.perf_counter() - t0:.2f} s)"
        )
    assert mask is not None
    t0 = time.perf_counter()
    out = session.export_label_map(args.output, protect=(args.image,), overwrite=args.overwrite)
    ml = float(mask.sum()) * float(np.prod(volume.spacing)) / 1000.0
    print(
        f"wrote {out}: {int(mask.sum())} voxels ({ml:.1f} ml) "
        f"({time.perf_counter() - t0:.2f} s; total {time.perf_counter() - t_start:.2f} s)"
    )
    if not mask.any():
        logger.warning(
            "warning: the mask is empty: the model found no object at the click(s); try a "
            "click deeper inside the object, more clicks, or other weights (--checkpoint)"
        )
    return 0
