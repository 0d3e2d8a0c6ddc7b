"""``sammed3d export``: write a checkpoint in the published format (``{"model_state_dict": ...}``).

The output holds only the fp32 weights under the published key names, so the published tools
(``train.py --checkpoint``, MedIM ``create_model(..., checkpoint_path=...)``) and
``torch.load(weights_only=True)`` read it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sammed3d.cli import add_overwrite_arg, add_unsafe_pickle_arg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint",
        help="a checkpoint file, a published name (turbo, ...), or a training run folder (its "
        "final/latest checkpoint)",
    )
    parser.add_argument("output", help="output .pth file")
    add_overwrite_arg(parser)
    add_unsafe_pickle_arg(parser)


def run(args: argparse.Namespace) -> int:
    from sammed3d.build import export_published, load_checkpoint
    from sammed3d.cli import CLIError
    from sammed3d.io import check_output_file

    source = Path(args.checkpoint)
    if source.is_dir():
        from sammed3d.training.checkpoint import find_latest_checkpoint

        found = find_latest_checkpoint(source)
        if found is None:
            raise FileNotFoundError(f"no checkpoint in run folder {source}/checkpoints")
        source = found
    else:
        from sammed3d.paths import require_checkpoint

        source = require_checkpoint(source)  # a file, or a published name (fetched)
    output = Path(args.output)
    if output.exists() and output.resolve() == source.resolve():
        raise CLIError(f"output {output} is the input checkpoint; choose another path")
    if output.is_dir():
        raise CLIError(f"output {output} is a directory; give a .pth file path")
    check_output_file(output, overwrite=args.overwrite, protect=(source,))
    model = load_checkpoint(source, allow_unsafe_pickle=args.allow_unsafe_pickle)
    export_published(model, output)
    n = sum(p.numel() for p in model.state_dict().values())
    print(f"exported {source} -> {output} ({len(model.state_dict())} tensors, {n:,} values)")
    return 0
