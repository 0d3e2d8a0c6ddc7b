"""``sammed3d segment``: segment one object of a volume from clicks, write a mask file.

Example::

    sammed3d segment ct.nii.gz --point 250 261 140 --negative 262 255 141 \\
        --checkpoint sam_med3d_turbo.pth --output liver.nii.gz

Points are native voxel indices ``I J K`` of the image (the order of ITK-SNAP, 3D Slicer's
"IJK" and nibabel; see ``sammed3d.inference.geometry``), or physical millimetres with
``--coords ras`` / ``--coords lps``. A click is a voxel: fractional indices (and every point
given in mm) go to the nearest voxel, ties rounded up (``2.5 -> 3``), in one place,
:meth:`sammed3d.SamMed3DPredictor.click_voxels`, which also checks every click against the
image before the first model run; each printed click line shows the voxel used. Clicks are
applied one per step in the order given, as in the published interaction (``--accumulate``
gives every click at each step).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sammed3d.cli import (
    add_device_arg,
    add_extension_args,
    add_irregular_slices_arg,
    add_modality_arg,
    add_overwrite_arg,
    add_rule_args,
    add_unsafe_pickle_arg,
    check_max_rois,
    check_rule_args,
    rule_kwargs,
)
from sammed3d.logs import held_messages, notice_if_slow, release

if TYPE_CHECKING:
    import numpy as np

    from sammed3d.inference import InteractiveSession

logger = logging.getLogger(__name__)

#: A mask larger than this share of the image gets a warning (a click on the background).
LARGE_MASK_FRACTION = 0.5
#: A click still running after this many seconds gets a line saying so (a large object).
SLOW_CLICK_NOTICE_S = 3.0
#: A later click that leaves fewer than this share of the mask's voxels gets a note (one
#: click can undo a good mask: README, "What it does not do yet").
SHRINK_NOTE_FRACTION = 0.1


#: An image without a modality whose darkest voxel is at or below this looks like CT in
#: Hounsfield units (air is -1000 HU; MR intensities are not negative): segment says so.
HU_AIR_HINT = -900.0


def _not_ct_line(array: np.ndarray) -> str:
    """The modality line of an image that names none: with a hint when its intensities look
    like Hounsfield units (a CT saved without its modality)."""
    import numpy as np

    line = "modality: not CT (no clamp; the file does not say: --modality CT for a CT)"
    low = float(np.min(array))
    if low <= HU_AIR_HINT:
        line += (
            f"; its darkest voxel is {low:g}, like air in Hounsfield units: if it is a CT, "
            "--modality CT clamps it to [-1000, 1000] as in training"
        )
    return line


def unfollowed_note(positive: bool, inside: bool) -> str:
    """The note for a click whose voxel the mask does not follow (a negative click's voxel
    inside it, a positive one's outside); empty when it does."""
    if inside == positive:
        return ""
    return (
        f"  note: the voxel of this {'positive' if positive else 'negative'} click is "
        f"{'out of' if positive else 'in'} the mask: the model did not follow it (leave it "
        "out, or click where the mask is clearly wrong)"
    )


def shrink_note(before: int, after: int, positive: bool) -> str:
    """The note for a later click that took the mask from ``before`` to ``after`` voxels:
    empty unless fewer than ``SHRINK_NOTE_FRACTION`` of them are left."""
    if before <= 0 or after >= SHRINK_NOTE_FRACTION * before:
        return ""
    return (
        f"  note: this {'positive' if positive else 'negative'} click left {after} of the "
        f"mask's {before} voxels "
        f"({100.0 * (before - after) / before:.1f}% fewer): if the mask was right before it, "
        "leave this click out or place it elsewhere"
    )


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


def _extent(text: str) -> int:
    """``--extent``: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
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
        help="a positive click (repeatable); native voxel indices unless --coords says mm; "
        "fractional values go to the nearest voxel (.5 rounds up)",
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
        help="model checkpoint: a file, a published name (turbo, sam_med3d, default; see "
        "`sammed3d weights`) or a training run folder (its newest checkpoint); "
        "default: $SAMMED3D_CHECKPOINT, then the bundled weights",
    )
    add_unsafe_pickle_arg(parser)
    parser.add_argument(
        "--coords",
        choices=("voxel", "ras", "lps"),
        default="voxel",
        help="how points are given: native voxel indices (default) or world mm (RAS as in "
        "3D Slicer/nibabel, LPS as in ITK/DICOM)",
    )
    add_modality_arg(
        parser,
        "image modality; CT clamps intensities to [-1000, 1000] (default: from the file's "
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
    add_rule_args(parser)
    parser.add_argument(
        "--extent",
        type=_extent,
        default=None,
        metavar="N",
        help="after the first click, take mask N of those it could get (0 = the smallest; "
        "segment prints the list after the first click) instead of the model's pick; later "
        "clicks refine it (models that offer several masks per click, like the bundled one)",
    )
    parser.add_argument(
        "--allow-label-image",
        action="store_true",
        help="accept an image with only a few distinct values (it looks like a label map)",
    )
    add_irregular_slices_arg(parser, "the mask is then written on that grid")
    add_device_arg(parser)
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")


def _first_click_extents(session: InteractiveSession, extent: int | None) -> None:
    """Print the masks the first click could get; take ``extent`` of them if given."""
    import numpy as np

    found = session.extents()  # ValueError (one line) for a model with one mask per click
    mark = f" ({session.rule})" if session.rule else " (model)"
    ml_per_voxel = float(np.prod(session.predictor.volume.spacing)) / 1000.0

    def size(voxels: int) -> str:  # a mask too small for "0.0 ml" is counted in voxels
        ml = voxels * ml_per_voxel
        return f"{ml:.1f} ml" if ml >= 0.05 else f"{voxels} voxel{'s' * (voxels != 1)}"

    cells = []
    for e in found:
        cell = f"{e.index}: {size(e.voxels)} at {e.spacing_mm:g} mm{mark if e.picked else ''}"
        if e.model_pick and not e.picked:  # a rule took another: the model's own is marked too
            cell += " (model)"
        if e.taken_voxels is None:
            cell += " (more when taken: it grows through a ROI face)"
        elif e.taken_voxels != e.voxels:
            cell += f" ({size(e.taken_voxels)} when taken: grown through ROI faces)"
        cells.append(cell)
    print(f"  masks this click could get (--extent N): {'  '.join(cells)}")
    picked = next((e for e in found if e.picked), None)
    model = next((e for e in found if e.model_pick), None)
    if extent is None and picked and model and picked is not model:
        # a rule took a mask of another size than the model's: say how to get the model's
        # (a CT lesion's 4 ml became the 2.4 l body, whose edge is sharper; 2026-12-03 trial)
        print(
            f"  not the structure you clicked? --extent {model.index} takes the model's own "
            "mask (--first-pick model: the model's pick for every first click)"
        )
    if extent is not None:
        if extent >= len(found):
            raise ValueError(
                f"--extent must be in 0..{len(found) - 1} (the masks listed above), got {extent}"
            )
        chosen = session.choose_extent(extent)
        print(f"  took mask {chosen.index}: {session.voxel_count()} voxels, {_where(session)}")


def _where(session: InteractiveSession) -> str:
    """Where the object's mask lives: "1 ROI at 1 mm (zoom-in)" on a zoom lattice, else the
    number of ROIs."""
    import numpy as np

    tile = session.tiles[0]
    if session.predictor.is_zoomed(tile):
        return f"1 ROI at {float(np.mean(tile.roi.grid.spacing)):g} mm (zoom-in)"
    return f"{len(session.tiles)} ROI(s)"


def run(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()  # the total includes loading numpy and torch
    import numpy as np
    import torch

    from sammed3d.cli import CLIError
    from sammed3d.devices import resolve_device
    from sammed3d.inference import InteractiveSession, SamMed3DPredictor
    from sammed3d.io import (
        LPS_TO_RAS,
        check_output_file,
        check_volume_name,
        describe_world_extent,
    )

    clicks = args.clicks or []
    if not clicks:
        raise CLIError("give at least one click: --point I J K")
    if not clicks[0][1]:
        raise CLIError("the first click must be positive (--point), it places the ROI")
    if args.label < 1 or args.label > 65535:
        raise CLIError(f"--label must be in 1..65535, got {args.label}")
    check_max_rois(args.max_rois)
    check_rule_args(args)
    check_volume_name(args.output)
    # everything that can be checked before the work: output, device
    check_output_file(args.output, overwrite=args.overwrite, protect=(args.image,))
    if args.threads is not None:
        if args.threads < 1:
            raise CLIError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    t0 = time.perf_counter()
    predictor = SamMed3DPredictor.from_checkpoint(  # resolves --checkpoint (once)
        args.checkpoint,
        device,
        allow_unsafe_pickle=args.allow_unsafe_pickle,
        extend=not args.no_extend,
        max_rois=args.max_rois,
        **rule_kwargs(args),
    )
    print(f"loaded {predictor.checkpoint} on {device} ({time.perf_counter() - t0:.2f} s)")
    print(f"inference rules: {predictor.rules_summary()}")
    if args.extent is not None and not predictor.offers_extents():
        raise CLIError(
            f"--extent needs a model that offers several masks per click; {predictor.checkpoint}"
            " decodes one mask per click"
        )
    if args.extent is not None and args.extent >= predictor.max_extents():
        raise CLIError(  # before the image is read and encoded; the click may list fewer
            f"--extent must be in 0..{predictor.max_extents() - 1} for this model (its first "
            f"click lists at most {predictor.max_extents()} masks), got {args.extent}"
        )

    t0 = time.perf_counter()
    session = InteractiveSession(predictor, accumulate_clicks=args.accumulate)
    session.set_image(  # reads and checks the image (once); modality: --modality or metadata
        args.image,
        modality=args.modality,
        allow_label_like=args.allow_label_image,
        irregular_slices=args.irregular_slices,
    )
    volume = predictor.volume
    print(
        f"read {args.image}: shape {volume.shape}, spacing "
        f"{tuple(round(s, 3) for s in volume.spacing)} mm ({time.perf_counter() - t0:.2f} s)"
    )
    print(f"modality: {predictor.modality}" if predictor.modality else _not_ct_line(volume.array))
    points = np.asarray([xyz for xyz, _ in clicks], dtype=np.float64)
    if args.coords != "voxel":
        lps = points @ LPS_TO_RAS if args.coords == "ras" else points  # RAS->LPS: same flip
        points = volume.physical_to_index(lps)
    # every click rounded to its voxel and checked before the first model run
    try:
        voxels = predictor.click_voxels(points)
    except ValueError as exc:
        if args.coords == "voxel":
            raise
        for n, (xyz, _) in enumerate(clicks, start=1):  # name the click as the user typed it
            try:
                predictor.click_voxels(points[n - 1])
            except ValueError:
                typed = ", ".join(f"{v:g}" for v in xyz)
                extent = describe_world_extent(volume, volume.shape, space=args.coords)
                raise ValueError(
                    f"{exc}; click {n} was given as {args.coords.upper()} ({typed}) mm, and "
                    f"the image spans {extent}"
                ) from None
        raise

    session.new_object(args.label)
    for n, (voxel, (_, positive)) in enumerate(zip(voxels, clicks, strict=True), start=1):
        t0 = time.perf_counter()
        slow = (
            f"click {n}/{len(clicks)}: still segmenting after {SLOW_CLICK_NOTICE_S:g} s (a busy "
            "CPU, or an object larger than the model's ROI, which is predicted ROI by ROI)"
        )
        before = session.voxel_count()
        with held_messages() as held, notice_if_slow(slow, SLOW_CLICK_NOTICE_S):
            click = session.add_click(voxel, positive=positive)
        print(
            f"click {n}/{len(clicks)} {'+' if positive else '-'} at {click.coord}: "
            f"{session.voxel_count()} voxels, {_where(session)} "
            f"({time.perf_counter() - t0:.2f} s)"
        )
        if session.rule_note:
            print(f"  {session.rule_note}")
        if n > 1 and (note := shrink_note(before, session.voxel_count(), positive)):
            print(note)
        earlier = next(
            (m for m, (v, (_, p)) in enumerate(zip(voxels[: n - 1], clicks, strict=False), 1)
             if p != positive and tuple(v) == tuple(voxel)),
            None,
        )  # fmt: skip
        inside = session.contains(tuple(int(v) for v in click.coord))
        if earlier is not None:  # the model gets both; say which one the voxel follows
            print(
                f"  note: this click is on the voxel of click {earlier}, which was "
                f"{'negative' if positive else 'positive'}: the two contradict; the voxel is "
                f"{'in' if inside else 'out of'} the mask now"
            )
        elif not session.rule_note and (note := unfollowed_note(positive, inside)):
            print(note)  # (a click a rule refused says why itself)
        sys.stdout.flush()
        release(held)
        if n == 1 and (predictor.offers_extents() or args.extent is not None):
            _first_click_extents(session, args.extent)
    t0 = time.perf_counter()
    out = session.export_label_map(args.output, protect=(args.image,), overwrite=args.overwrite)
    count = session.voxel_count()
    ml = count * float(np.prod(volume.spacing)) / 1000.0
    refused = len(clicks) - len(session.clicks)  # clicks the edge check did not keep
    print(
        f"wrote {out}: {count} voxels ({ml:.1f} ml)"
        + (f" from {len(session.clicks)} of the {len(clicks)} clicks" if refused else "")
        + f" ({time.perf_counter() - t0:.2f} s; total {time.perf_counter() - t_start:.2f} s)"
    )
    if count == 0:
        logger.warning(
            "warning: the mask is empty: the model found no object at the click(s); try a "
            "click deeper inside the object, more clicks, or other weights (--checkpoint)"
        )
    elif count > LARGE_MASK_FRACTION * (total := int(np.prod(volume.shape))):
        logger.warning(
            "warning: the mask covers %.0f%% of the image: the click may be on the background "
            "or the object has no visible border there; check it, or add a negative click (-n)",
            100.0 * count / total,
        )
    return 0
