"""``sammed3d train``: train or fine-tune with the published click-simulation regime.

Examples::

    sammed3d train --config finetune_turbo --init sam_med3d_turbo.pth \\
        data.roots=[/data/Dataset001_Liver] run.output_dir=runs/liver
    torchrun --nproc_per_node 8 -m sammed3d train --config default data.roots=[...]
    sammed3d train --resume runs/liver            # continue an interrupted run
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from sammed3d.cli import add_unsafe_pickle_arg

if TYPE_CHECKING:
    from sammed3d.training.config import TrainingConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="CONFIG",
        help="YAML config, or a packaged one: default (the published regime), finetune_turbo "
        "(fine-tune the published turbo), finetune_default (fine-tune the bundled model on "
        "your data), default_model (how the bundled model was trained), tiny_cpu, semantic "
        "(a multi-class task model on a SAM-Med3D encoder)",
    )
    parser.add_argument(
        "--init",
        metavar="CKPT",
        help="initial weights: a file (ours or a published .pth) or a published name such as "
        "turbo (downloaded and verified); must fit the model",
    )
    add_unsafe_pickle_arg(parser)
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its latest checkpoint, with its saved config",
    )
    parser.add_argument(
        "-o", "--output-dir", metavar="RUN_DIR", help="run folder (sets run.output_dir)"
    )
    parser.add_argument(
        "--cache-only",
        action="store_true",
        help="only build the pre-processing cache, then exit (works under torchrun too)",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config as YAML and exit",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. optim.lr=8e-5 train.batch_size=2 data.roots=[/data/a]",
    )


def run(args: argparse.Namespace) -> int:
    from sammed3d.cli import EXIT_INTERRUPTED, EXIT_TERMINATED, CLIError
    from sammed3d.training.config import (
        PACKAGED_CONFIGS,
        config_to_yaml,
        load_config,
        validate_config,
    )

    overrides = list(args.overrides)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise CLIError(f"overrides must look like section.key=value, got {bad[0]!r}")
    if args.resume:
        if args.config:
            raise CLIError(
                "--resume continues a run with its saved config.yaml; drop --config "
                "(pass key=value overrides to change settings)"
            )
        if args.init:
            raise CLIError("--init cannot be combined with --resume (weights come from the run)")
        run_dir = Path(args.resume)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"run folder not found: {run_dir}")
        config_path = run_dir / "config.yaml"
        if not config_path.exists():
            raise FileNotFoundError(f"not a training run folder (no config.yaml): {run_dir}")
        cfg = load_config(config_path, overrides)
        cfg.run.output_dir = str(run_dir)
    else:
        if not args.config:
            raise CLIError(
                "--config is required (a YAML file or a packaged name: "
                f"{', '.join(PACKAGED_CONFIGS)}), or --resume RUN_DIR"
            )
        cfg = load_config(args.config, overrides)
        if args.init:
            cfg.model.init_checkpoint = str(args.init)
        if args.output_dir:
            cfg.run.output_dir = str(args.output_dir)
    if args.allow_unsafe_pickle:
        cfg.model.allow_unsafe_pickle = True
    validate_config(cfg)

    if args.print_config:
        print(config_to_yaml(cfg), end="")
        return 0
    # before any work: the device exists, the run folder can be written
    from sammed3d.devices import resolve_device
    from sammed3d.io import check_writable_folder

    resolve_device(cfg.train.device, option="train.device")
    run_dir = Path(cfg.run.output_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise CLIError(f"run folder {run_dir} is a file")
    check_writable_folder(run_dir)
    if cfg.model.init_checkpoint:
        from sammed3d.paths import require_checkpoint
        from sammed3d.weights import lookup

        init = cfg.model.init_checkpoint
        entry = None if Path(init).exists() else lookup(init)
        if entry is not None and entry.architecture not in (None, cfg.model.name):
            from sammed3d.training.config import finetune_fit

            fit = finetune_fit(entry.architecture, args.config)
            raise CLIError(
                f"--init {init} is a {entry.architecture}, which cannot "
                f"fit model.name={cfg.model.name}: fine-tune it with {fit}"
            )
        try:  # a file, or a published name such as turbo (fetched and verified now)
            require_checkpoint(cfg.model.init_checkpoint)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"init {exc}") from None
    if args.cache_only:
        return _cache_only(cfg, show_progress=not args.no_progress)

    from sammed3d.training import Trainer

    trainer = Trainer(cfg, resume=bool(args.resume), show_progress=not args.no_progress)
    result = trainer.fit()
    stopped_by = None if result.finished else trainer.stop_signal
    if os.environ.get("RANK", "0") == "0":
        status = "finished" if result.finished else "stopped"
        if stopped_by is not None:
            status = f"stopped by {stopped_by.name}"
        print(
            f"{status}: epoch {result.epoch}, step {result.global_step}, "
            f"checkpoint {result.checkpoint}"
        )
        if not result.finished:
            print(f"continue with: sammed3d train --resume {result.run_dir}")
    # a scheduler must not count a pre-empted run as done: 143 = 128 + SIGTERM, 130 for Ctrl-C
    if stopped_by is None:
        return 0
    return EXIT_INTERRUPTED if stopped_by == signal.SIGINT else EXIT_TERMINATED


def _cache_only(cfg: TrainingConfig, show_progress: bool) -> int:
    from sammed3d.training.data import build_training_dataset
    from sammed3d.training.distributed import cleanup_distributed, init_distributed

    ctx = init_distributed(cfg.train.device)
    ok = False
    try:
        if cfg.task.kind == "semantic":
            from sammed3d.training.semantic_data import build_semantic_cases

            cases, _ = build_semantic_cases(cfg, ctx, show_progress=show_progress)
            count = f"{len(cases)} training cases"
        else:
            dataset = build_training_dataset(cfg, ctx, show_progress=show_progress)
            count = f"{len(dataset)} training targets"
        ok = True
    finally:
        if ok:
            cleanup_distributed(ctx)
        else:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
    if ctx.is_main:
        print(f"cache ready: {count}")
    return 0
