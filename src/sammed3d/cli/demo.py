"""``sammed3d demo``: segment visible structures of the bundled MRI with a few clicks each."""

from __future__ import annotations

import argparse
from pathlib import Path

from sammed3d.cli import (
    add_device_arg,
    add_extension_args,
    add_overwrite_arg,
    add_unsafe_pickle_arg,
    check_max_rois,
)

#: The files the demo writes into its output folder (replaced only with --overwrite).
DEMO_OUTPUTS = ("demo_labels.nii.gz", "demo_overlay.png", "demo_summary.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output-dir", default="sammed3d_demo", help="output folder (default: sammed3d_demo)"
    )
    parser.add_argument(
        "--checkpoint",
        help="weights: a file, a published name (turbo, sam_med3d, default; see `sammed3d "
        "weights`) or a training run folder (its newest checkpoint); "
        "default: $SAMMED3D_CHECKPOINT, else the bundled demo model",
    )
    parser.add_argument(
        "--structures",
        help="comma-separated names (default: whole_brain,white_matter,lateral_ventricles)",
    )
    parser.add_argument(
        "--clicks",
        type=int,
        default=5,
        help="clicks per structure (default 5; the first is "
        "the most interior voxel, the others go to the centre of the largest error)",
    )
    add_device_arg(parser)
    add_overwrite_arg(
        parser,
        "files in the output folder (a folder the demo wrote before is refreshed without it)",
    )
    add_extension_args(parser, "one ROI per structure")
    add_unsafe_pickle_arg(parser)


def run(args: argparse.Namespace) -> int:
    from sammed3d.demo import DEFAULT_STRUCTURES, run_demo
    from sammed3d.devices import resolve_device
    from sammed3d.io import check_output_file

    structures = (
        tuple(s.strip() for s in args.structures.split(",") if s.strip())
        if args.structures
        else DEFAULT_STRUCTURES
    )
    if args.clicks < 1:
        raise ValueError(f"--clicks must be >= 1, got {args.clicks}")
    check_max_rois(args.max_rois)
    # everything that can fail before the work, checked before anything is created
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output folder {out} is a file")
    package = Path(__file__).resolve().parents[1]  # the installed sammed3d package
    if out.resolve() == package or package in out.resolve().parents:
        raise ValueError(
            f"-o {out} lies inside the installed sammed3d package ({package}), beside its bundled "
            "data: choose a folder of your own"
        )
    overwrite = args.overwrite or _written_by_demo(out)
    for name in DEMO_OUTPUTS:
        check_output_file(out / name, overwrite=overwrite)
    device = str(resolve_device(args.device))
    created = not out.exists()
    try:
        result = run_demo(  # resolves --checkpoint (once) before it writes anything
            out,
            checkpoint=args.checkpoint,
            structures=structures,
            clicks=args.clicks,
            device=device,
            allow_unsafe_pickle=args.allow_unsafe_pickle,
            extend=not args.no_extend,
            max_rois=args.max_rois,
        )
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # leave no empty output folder behind
        raise
    print(f"checkpoint: {result.checkpoint}")
    header = "  ".join(f"click {n + 1:>2}" for n in range(args.clicks))
    print(
        f"{'structure':<20} {'first click (i,j,k)':<20} Dice {header}   s/click  "
        "1st click in its mask"
    )
    for r in result.structures:
        click = ",".join(str(c) for c in r.clicks[0][:3])
        dices = "  ".join(f"{d:8.3f}" for d in r.dice)
        per_click = sum(r.seconds) / len(r.seconds)
        inside = "yes" if r.first_click_in_mask else "NO"
        print(f"{r.name:<20} {click:<20}      {dices}   {per_click:7.2f}  {inside}")
    means = "  ".join(f"{result.mean_dice(n):8.3f}" for n in range(args.clicks))
    print(f"{'mean':<20} {'':<20}      {means}")
    print("(Dice against the structure's reference after each click; later structures are")
    print(" painted over earlier ones in the label map, the Dice is of each structure's own mask)")
    if any(r.extents for r in result.structures):
        print("the masks each first click could get (E / Shift+E in `sammed3d serve`, --extent N")
        print(" in `sammed3d segment`), smallest first: Dice (volume), * = the pick,")
        print(" which the later clicks above refine:")
        for r in result.structures:
            cells = "  ".join(
                f"{e['dice']:.3f}{'*' if e['picked'] else ' '} ({e['volume_ml']:.0f} ml)"
                for e in r.extents
            )
            print(f"  {r.name:<18} {cells}")
    print(f"image     : {result.image}")
    legend = ", ".join(f"{r.label} = {r.name}" for r in result.structures)
    print(f"label map : {result.label_map} ({legend})")
    print(f"overlay   : {result.figure}")
    print(f"summary   : {result.summary}")
    print(
        "view      : open the image with the label map as a segmentation in 3D Slicer, "
        "ITK-SNAP or any NIfTI viewer, or click your own structures: sammed3d serve "
        f"{result.image}"
    )
    return 0


def _written_by_demo(folder: Path) -> bool:
    """Whether ``folder`` holds a summary the demo wrote (its files may then be refreshed)."""
    import json

    from sammed3d.demo import WRITTEN_BY

    try:
        summary = json.loads((folder / "demo_summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and summary.get("written_by") == WRITTEN_BY
