"""``sammed3d demo``: segment named structures of the bundled MRI from one click each."""

from __future__ import annotations

import argparse

from sammed3d.cli import add_device_arg, add_overwrite_arg, add_unsafe_pickle_arg

#: The files the demo writes into its output folder (replaced only with --overwrite).
DEMO_OUTPUTS = ("demo_labels.nii.gz", "demo_overlay.png", "demo_summary.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output-dir", default="sammed3d_demo", help="output folder (default: sammed3d_demo)"
    )
    parser.add_argument(
        "--checkpoint",
        help="weights: a file or a published name (turbo, sam_med3d, default; see `sammed3d "
        "weights`); default: $SAMMED3D_CHECKPOINT, else the bundled demo model",
    )
    parser.add_argument(
        "--structures",
        help="comma-separated AAL names (default: Hippocampus_L,Thalamus_R,Precentral_L,"
        "Cerebelum_6_R,Caudate_L,Putamen_R)",
    )
    add_device_arg(parser, default="cpu")
    add_overwrite_arg(parser, "the demo's files in the output folder")
    parser.add_argument("--no-extend", action="store_true", help="one ROI per structure")
    add_unsafe_pickle_arg(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sammed3d.demo import DEFAULT_STRUCTURES, run_demo
    from sammed3d.devices import resolve_device
    from sammed3d.io import check_output_file
    from sammed3d.paths import require_checkpoint

    structures = (
        tuple(s.strip() for s in args.structures.split(",") if s.strip())
        if args.structures
        else DEFAULT_STRUCTURES
    )
    # everything that can fail before the work, checked before anything is created
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output folder {out} is a file")
    for name in DEMO_OUTPUTS:
        check_output_file(out / name, overwrite=args.overwrite)
    device = str(resolve_device(args.device))
    checkpoint = require_checkpoint(args.checkpoint)
    created = not out.exists()
    try:
        result = run_demo(
            out,
            checkpoint=checkpoint,
            structures=structures,
            device=device,
            allow_unsafe_pickle=args.allow_unsafe_pickle,
            extend=not args.no_extend,
        )
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # leave no empty output folder behind
        raise
    print(f"checkpoint: {result.checkpoint}")
    print(f"{'structure':<16} {'click (i,j,k)':<16} {'Dice':>6} {'seconds':>8}")
    for r in result.structures:
        tag = "  (held-out category)" if r.held_out_category else ""
        click = ",".join(str(c) for c in r.click)
        print(f"{r.name:<16} {click:<16} {r.dice:6.3f} {r.seconds:8.2f}{tag}")
    print(f"{'mean':<16} {'':<16} {result.mean_dice:6.3f}")
    print(f"label map : {result.label_map}")
    print(f"overlay   : {result.figure}")
    print(f"summary   : {result.summary}")
    return 0
