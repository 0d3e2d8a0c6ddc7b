"""How often a click lowers Dice in training's own click loop: a checkpoint's hard Dice per
click on generated crops, and the later clicks that lowered a target's Dice by more than 0.05
(the threshold of ``sammed3d evaluate``), without a gradient step.

The crops and the loop are those of a training config (default: the bundled model's
``default_model``, whose assets ``tools/build_demo_data.py`` writes), drawn with a seed that
no recorded run used, so the count compares checkpoints on the same crops and clicks; the
tuning chains (``tools/evaluate_tuning_sets.sh``) count the same thing through the session.

Usage: .venv/bin/python tools/count_training_falls.py CKPT [--batches 30] [--clicks 5]
           [--config default_model] [--seed 9191] [--threads 1] [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import sys

#: A click lowers Dice when the target's Dice falls by more than this (as ``sammed3d evaluate``).
FALL = 0.05


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a checkpoint file or name (default, turbo, ...)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--batches", type=int, default=30, help="batches of the config's size")
    parser.add_argument("--clicks", type=int, default=5, help="clicks per target (default 5)")
    parser.add_argument("--config", default="default_model", help="training config (name/file)")
    parser.add_argument("--seed", type=int, default=9191, help="crop and click seed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    if args.batches < 1 or args.clicks < 2 or args.threads < 1:
        parser.error(
            "--batches and --threads must be >= 1 and --clicks >= 2, got "
            f"{args.batches}, {args.threads} and {args.clicks}"
        )

    import torch

    from sammed3d import load_checkpoint
    from sammed3d.training.config import ConfigError, load_config
    from sammed3d.training.data import build_generated_dataset
    from sammed3d.training.trainer import build_click_loop

    torch.set_num_threads(args.threads)
    try:
        cfg = load_config(args.config, [f"train.seed={args.seed}", *args.overrides])
        dataset = build_generated_dataset(cfg)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        parser.error(str(exc).splitlines()[0])
    try:
        model = load_checkpoint(args.checkpoint)
    except Exception as exc:  # noqa: BLE001 - any load failure is one line here
        parser.error(f"cannot load checkpoint {args.checkpoint}: {str(exc).splitlines()[0]}")
    if model.img_size != dataset[0]["image"].shape[-1]:
        parser.error(
            f"the checkpoint's input is {model.img_size}^3 but the config's model "
            f"({cfg.model.name}) draws {dataset[0]['image'].shape[-1]}^3 crops: pass "
            "model.name=<the checkpoint's architecture>"
        )
    loop = build_click_loop(model.train(), cfg, num_clicks=args.clicks)
    size = cfg.train.batch_size
    rows = []
    for b in range(args.batches):
        items = [dataset[(b * size + i) % len(dataset)] for i in range(size)]
        with torch.no_grad():
            out = loop(
                torch.stack([x["image"] for x in items]),
                torch.stack([x["label"] for x in items]),
                torch.tensor([int(x["seed"]) for x in items]),
            )
        rows.append(out["dice_per_sample"])
        print(f"batch {b + 1}/{args.batches}", file=sys.stderr, flush=True)
    dice = torch.cat(rows)  # (targets, clicks)
    falls = dice[:, 1:] < dice[:, :-1] - FALL
    print(f"targets: {dice.shape[0]} ({args.batches} batches of {size} crops)")
    print("mean Dice per click: " + " / ".join(f"{float(v):.3f}" for v in dice.mean(0)))
    print(
        f"later clicks lowering Dice by > {FALL}: {int(falls.sum())} of {falls.numel()} "
        f"({float(falls.float().mean()):.1%})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
