"""``sammed3d export``: write a checkpoint in the published format (``{"model_state_dict": ...}``).

The output holds only the fp32 weights under the published key names, so the published tools
(``train.py --checkpoint``, MedIM ``create_model(..., checkpoint_path=...)``) and
``torch.load(weights_only=True)`` read it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from sammed3d.cli import add_overwrite_arg, add_unsafe_pickle_arg

if TYPE_CHECKING:
    import torch


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
    from sammed3d.build import export_published, load_checkpoint, resolve_checkpoint_path
    from sammed3d.cli import CLIError
    from sammed3d.io import check_output_file

    # a file, a published name (fetched) or a training run folder (its newest checkpoint):
    # resolved as every command resolves --checkpoint
    source = resolve_checkpoint_path(args.checkpoint)
    output = Path(args.output)
    if output.exists() and output.resolve() == source.resolve():
        raise CLIError(f"output {output} is the input checkpoint; choose another path")
    if output.is_dir():
        raise CLIError(f"output {output} is a directory; give a .pth file path")
    check_output_file(output, overwrite=args.overwrite, protect=(source,))
    model = load_checkpoint(source, allow_unsafe_pickle=args.allow_unsafe_pickle)
    export_published(model, output)
    print(f"exported {source} -> {output} ({_count_text(model)})")
    return 0


def _count_text(model: torch.nn.Module) -> str:
    """``3,498,181 parameters + 96 buffer values (123 tensors)``: the parameter count as
    ``info --checkpoint`` and ``weights verify`` report it, and the buffers the file also holds."""
    state = model.state_dict()
    param_names = {name for name, _ in model.named_parameters()}
    n_params = sum(p.numel() for p in model.parameters())
    n_buffers = sum(v.numel() for k, v in state.items() if k not in param_names)
    return f"{n_params:,} parameters + {n_buffers:,} buffer values ({len(state)} tensors)"
