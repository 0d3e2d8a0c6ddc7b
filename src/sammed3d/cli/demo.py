"""``sammed3d demo``: segment named structures of the bundled MRI from one click each."""

from __future__ import annotations

import argparse

from sammed3d.cli import add_unsafe_pickle_arg


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
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--no-extend", action="store_true", help="one ROI per structure")
    add_unsafe_pickle_arg(parser)


def run(args: argparse.Namespace) -> int:
    from sammed3d.demo import DEFAULT_STRUCTURES, run_demo

    structures = (
        tuple(s.strip() for s in args.structures.split(",") if s.strip())
        if args.structures
        else DEFAULT_STRUCTURES
    )
    result = run_demo(
        args.output_dir,
        checkpoint=args.checkpoint,
        structures=structures,
        device=args.device,
        allow_unsafe_pickle=args.allow_unsafe_pickle,
        extend=not args.no_extend,
    )
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
