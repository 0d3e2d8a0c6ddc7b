"""``sammed3d export``: write a checkpoint in the published format (``{"model_state_dict": ...}``).

The output holds the fp32 weights under the published key names (no optimizer or training
state), so the published tools (``train.py --checkpoint``, MedIM ``create_model(...,
checkpoint_path=...)``) and ``torch.load(weights_only=True)`` read it. A model with settings
the weights alone do not carry (:func:`sammed3d.build.settings_beyond_weights`: our first-click
and inference rules, a decoder head count other than the released one) also gets its
``model_config`` and ``metadata`` next to ``model_state_dict``, which the published loaders
ignore, so that loading the file here gives the same model; ``--weights-only`` leaves them
out and says what is lost.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sammed3d.cli import add_overwrite_arg, add_unsafe_pickle_arg

if TYPE_CHECKING:
    import torch

#: File endings ``export`` writes (a PyTorch checkpoint).
OUTPUT_SUFFIXES = (".pth", ".pt")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint",
        help="a checkpoint file, a published name (turbo, ...), or a training run folder (its "
        "final/latest checkpoint)",
    )
    parser.add_argument("output", help="output .pth (or .pt) file")
    parser.add_argument(
        "--weights-only",
        action="store_true",
        help="write model_state_dict only, even when the model has settings the weights alone "
        "do not carry (they are named on stderr; sammed3d then loads the file without them)",
    )
    add_overwrite_arg(parser)
    add_unsafe_pickle_arg(parser)


def run(args: argparse.Namespace) -> int:
    from sammed3d.build import (
        export_published,
        load_checkpoint,
        model_config_of,
        resolve_checkpoint_path,
        save_checkpoint,
        settings_beyond_weights,
    )
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
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise CLIError(
            f"output must be a PyTorch checkpoint file ending in "
            f"{' or '.join(OUTPUT_SUFFIXES)}, got {output.name}"
        )
    check_output_file(output, overwrite=args.overwrite, protect=(source,))
    model = load_checkpoint(source, allow_unsafe_pickle=args.allow_unsafe_pickle)
    beyond = settings_beyond_weights(model)
    if beyond and not args.weights_only:
        save_checkpoint(model, output, metadata=getattr(model, "metadata", None))
    else:
        export_published(model, output)
    print(f"exported {source} -> {output} ({_count_text(model)})")
    if beyond and args.weights_only:
        print(
            f"warning: --weights-only left out settings the weights alone do not carry "
            f"({', '.join(beyond)}): sammed3d loads {output} without them, as a model that "
            "behaves differently",
            file=sys.stderr,
        )
    elif beyond:
        print(
            f"  kept model_config and metadata next to model_state_dict (the weights alone do "
            f"not carry {', '.join(beyond)}); the published loaders read model_state_dict only"
        )
    cfg = model_config_of(model)
    if cfg.click_maps or cfg.hires_channels:
        parts = (("click maps", cfg.click_maps), ("a high-res path", cfg.hires_channels))
        ours = [name for name, on in parts if on]
        print(
            f"  note: this model has {' and '.join(ours)}, which the published code does not "
            "build: only sammed3d loads it"
        )
    return 0


def _count_text(model: torch.nn.Module) -> str:
    """``3,498,181 parameters + 96 buffer values (123 tensors)``: the parameter count as
    ``info --checkpoint`` and ``weights verify`` report it, and the buffers the file also holds."""
    state = model.state_dict()
    param_names = {name for name, _ in model.named_parameters()}
    n_params = sum(p.numel() for p in model.parameters())
    n_buffers = sum(v.numel() for k, v in state.items() if k not in param_names)
    return f"{n_params:,} parameters + {n_buffers:,} buffer values ({len(state)} tensors)"
