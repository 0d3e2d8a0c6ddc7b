"""``sammed3d info``: versions; with flags, devices and a checkpoint's architecture.

Without flags it does not import torch (installed versions come from the package metadata),
so it answers in a fraction of a second. ``--devices``, ``--checkpoint`` and ``--forward``
load torch (a few seconds) and add the devices, CPU threads and registered models.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from importlib import metadata

from sammed3d.cli import add_unsafe_pickle_arg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--devices",
        action="store_true",
        help="also load torch: CUDA devices, CPU threads, registered models",
    )
    parser.add_argument(
        "--checkpoint",
        help="a checkpoint to describe (architecture, params): a file, a published name or a "
        "training run folder (its newest checkpoint)",
    )
    add_unsafe_pickle_arg(parser)
    parser.add_argument(
        "--forward",
        metavar="MODEL",
        help="also time one encoder forward pass of a registered MODEL on a synthetic volume",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")


def installed_version(distribution: str) -> str:
    """Version of an installed distribution from its metadata (no import), or ``"missing"``."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "missing"


def run(args: argparse.Namespace) -> int:
    from sammed3d._version import __version__

    info: dict[str, object] = {
        "sammed3d": __version__,
        "python": platform.python_version(),
        "torch": installed_version("torch"),
        "numpy": installed_version("numpy"),
    }
    if args.devices or args.checkpoint or args.forward:
        import torch

        from sammed3d.build import MODEL_REGISTRY, build_model, load_checkpoint

        info.update(
            {
                "cuda_available": torch.cuda.is_available(),
                "cuda_devices": [
                    torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
                ],
                "cpu_threads": torch.get_num_threads(),
                "registered_models": sorted(MODEL_REGISTRY),
            }
        )
    if args.checkpoint:
        from sammed3d.build import registered_names, resolve_checkpoint_path

        # a file, a published name (fetched) or a training run folder (its newest checkpoint)
        path = resolve_checkpoint_path(args.checkpoint)
        from sammed3d.task.checkpoint import is_task_checkpoint

        if is_task_checkpoint(path):  # a task model (docs/transfer.md)
            from sammed3d.task import load_task_checkpoint

            task = load_task_checkpoint(path)
            info["checkpoint"] = {
                "path": str(path),
                "kind": "task model (sammed3d predict)",
                "parameters": sum(p.numel() for p in task.parameters()),
                "task": task.spec.to_dict(),
                "metadata": getattr(task, "metadata", {}),
            }
        else:
            model = load_checkpoint(path, allow_unsafe_pickle=args.allow_unsafe_pickle)
            names = registered_names(model.config)
            info["checkpoint"] = {
                "path": str(path),
                # registry names with this architecture (sam_med3d and sam_med3d_turbo share one)
                "architecture": (
                    " / ".join(names) if names else "custom (no registered model has this config)"
                ),
                "parameters": sum(p.numel() for p in model.parameters()),
                "config": model.config.to_dict(),
                "metadata": getattr(model, "metadata", {}),
            }
    if args.forward:
        model = build_model(args.forward)
        size = model.img_size
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(1, 1, size, size, size, generator=gen)
        with torch.inference_mode():
            t0 = time.perf_counter()
            emb = model.image_encoder(x)
            elapsed = time.perf_counter() - t0
        info["forward"] = {
            "model": args.forward,
            "input": list(x.shape),
            "embedding": list(emb.shape),
            "finite": bool(torch.isfinite(emb).all()),
            "seconds": round(elapsed, 3),
        }
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        for key, value in info.items():
            _print_item(key, value)
        if "cuda_available" not in info:
            print(f"{'devices':>18}: not queried (add --devices; it loads torch)")
    return 0


def _print_item(key: str, value: object, depth: int = 0) -> None:
    """One line per value; a mapping (a checkpoint's config, its metadata) as an indented
    block with one line per entry."""
    name = f"{key:>18}" if depth == 0 else " " * (18 + 2 * depth) + key
    if isinstance(value, dict) and value:
        print(f"{name}:")
        for sub, item in value.items():
            _print_item(str(sub), item, depth + 1)
    else:
        print(f"{name}: {value}")
