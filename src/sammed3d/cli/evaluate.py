"""``sammed3d evaluate``: Dice after N simulated clicks on a labelled dataset (paper protocol)."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Iterable

from sammed3d.cli import (
    RULE_OPTIONS,
    add_device_arg,
    add_rule_args,
    add_unsafe_pickle_arg,
    check_rule_args,
    dataclass_defaults,
    rule_kwargs,
)
from sammed3d.cli.prepare import add_layout_argument
from sammed3d.evaluation.config import ROI_MODES, EvalConfig  # light: no torch, no numpy

METHODS = ("sam-med3d", "region-growing")

logger = logging.getLogger(__name__)


def _items(text: str, example: str) -> list[str]:
    """The stripped items of a comma-separated option value; an empty item is an error."""
    items = [v.strip() for v in text.split(",")]
    if not any(items):
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list such as {example}, got {text!r}"
        )
    if not all(items):
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list such as {example} without empty items, got {text!r}"
        )
    return items


def _int_list(text: str) -> list[int]:
    items = _items(text, "1,3,5,10")
    try:
        values = [int(v) for v in items]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 1,3,5,10, got {text!r}"
        ) from None
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive click counts, got {text!r}")
    return values


def _str_list(text: str) -> list[str]:
    return _items(text, "a,b")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = dataclass_defaults(EvalConfig)  # the one source of the protocol's defaults
    parser.add_argument(
        "--data",
        help="dataset folder: nnU-Net/MSD (dataset.json + imagesTs/labelsTs or imagesTr/labelsTr),"
        " per-class, TotalSegmentator, KiTS/LiTS/BraTS case folders, BIDS/VerSe, or a manifest"
        " .csv (docs/data.md)",
    )
    add_layout_argument(parser)
    parser.add_argument(
        "--split",
        choices=("auto", "train", "test"),
        default="auto",
        help="which labelled split to read (auto: the held-out split if labelled, else train)",
    )
    parser.add_argument(
        "-o", "--output", required=True, help="output folder (resumed if it exists)"
    )
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="sam-med3d",
        help="sam-med3d (the model, through the interactive session) or the classical "
        "region-growing baseline seeded with the same clicks",
    )
    parser.add_argument(
        "--checkpoint",
        help="model checkpoint for sam-med3d: a file, a published name (turbo, sam_med3d, "
        "default) or a training run folder (its newest checkpoint); "
        "default: $SAMMED3D_CHECKPOINT, then the bundled weights",
    )
    add_unsafe_pickle_arg(parser)
    add_device_arg(parser)
    parser.add_argument(
        "--clicks",
        type=_int_list,
        help=f"click counts to report (default {_joined(defaults['clicks'])}; clicks 1..max are "
        "simulated); with --merge: counts to report from the existing rows",
    )
    parser.add_argument(
        "--strategy",
        type=_str_list,
        default=list(defaults["strategy"]),
        help="click strategy: random (uniform over the error region, the published protocol) "
        "or center (RITM/EDT interior click); a list gives one per click, the last repeats "
        f"(default {_joined(defaults['strategy'])}; center,center,random = the legacy "
        "validation.py default)",
    )
    parser.add_argument(
        "--roi",
        choices=ROI_MODES,
        default=defaults["roi"],
        help="gt: ROI centred on the ground-truth box (published protocol); "
        "click: centred on the first click, as a user gets it (default %(default)s)",
    )
    parser.add_argument(
        "--no-extend",
        action="store_true",
        help="sam-med3d: keep every prediction inside its 128^3 ROI (published protocol: large "
        "objects are truncated) instead of extending it as the interactive default does",
    )
    add_rule_args(parser, prefix="sam-med3d: ")
    parser.add_argument(
        "--choose-extent",
        action="store_true",
        help="sam-med3d: after the first click a simulated user takes, of the masks the click "
        "could get (InteractiveSession.extents), the one with the best Dice, as a person does "
        "by looking through them in `sammed3d serve`; uses the ground truth: report it as its own "
        "method",
    )
    parser.add_argument(
        "--accumulate-clicks",
        action="store_true",
        default=None,
        help="sam-med3d: give the model all clicks of the target at every step (current MedIM "
        "scripts) instead of only the newest one plus the previous mask (training, legacy); "
        "default: what the model was trained with",
    )
    parser.add_argument(
        "--seed", type=int, default=defaults["seed"], help="base seed (default %(default)s)"
    )
    parser.add_argument(
        "--tolerance-mm",
        type=float,
        default=defaults["tolerance_mm"],
        help="NSD tolerance in mm (default %(default)s)",
    )
    parser.add_argument(
        "--metrics",
        type=_str_list,
        default=list(defaults["metrics"]),
        help=f"metrics per click among dice,nsd,iou,hd95 (default {_joined(defaults['metrics'])})",
    )
    parser.add_argument(
        "--classes", type=_str_list, help="only these class names (comma-separated)"
    )
    parser.add_argument("--limit", type=int, help="only the first N cases (quick checks)")
    parser.add_argument(
        "--shard",
        help="I/N: evaluate every N-th case starting at I (default: torchrun's RANK/WORLD_SIZE,"
        " else 0/1); the last shard to finish writes the merged results",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="only rebuild per_click.csv, summary.json and the plot from OUTPUT's parts",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="discard previous results in OUTPUT (default: resume them)",
    )


def _joined(values: Iterable[object]) -> str:
    """``(1, 3, 5)`` -> ``"1,3,5"`` (how the list options are written)."""
    return ",".join(str(v) for v in values)


#: The most clicks per target :class:`EvalConfig` takes.
MAX_CLICKS = 1000


def eval_config(args: argparse.Namespace) -> EvalConfig:
    """The protocol settings of parsed ``evaluate`` arguments.

    The values are checked here first, so that an error names the option as typed
    (``--strategy``), not the field of :class:`EvalConfig`.

    Raises:
        CLIError: a value :class:`EvalConfig` would refuse (unknown strategy or metric, ...).
    """
    from sammed3d.cli import CLIError
    from sammed3d.clicks import CLICK_STRATEGIES
    from sammed3d.evaluation.metrics import METRIC_NAMES

    if args.clicks and max(args.clicks) > MAX_CLICKS:
        raise CLIError(
            f"--clicks: expected at most {MAX_CLICKS} clicks per target, got {max(args.clicks)}"
        )
    bad = [s for s in args.strategy if s not in CLICK_STRATEGIES]
    if bad:
        raise CLIError(
            f"--strategy: expected a comma-separated list of {', '.join(CLICK_STRATEGIES)}, "
            f"got {_joined(args.strategy)} ({', '.join(bad)} unknown)"
        )
    unknown = [m for m in args.metrics if m not in METRIC_NAMES]
    if unknown:
        raise CLIError(
            f"--metrics: expected a comma-separated list among {', '.join(METRIC_NAMES)}, "
            f"got {_joined(args.metrics)} ({', '.join(unknown)} unknown)"
        )
    if "dice" not in args.metrics:
        raise CLIError(
            f"--metrics: expected a list that includes dice, got {_joined(args.metrics)}"
        )
    if not (math.isfinite(args.tolerance_mm) and args.tolerance_mm >= 0):
        raise CLIError(f"--tolerance-mm: expected a finite number >= 0, got {args.tolerance_mm}")
    if args.seed < 0:
        raise CLIError(f"--seed: expected an integer >= 0, got {args.seed}")
    clicks = {"clicks": tuple(args.clicks)} if args.clicks else {}  # None: --merge keeps its own
    return EvalConfig(
        **clicks,
        strategy=tuple(args.strategy),  # type: ignore[arg-type]
        roi=args.roi,
        seed=args.seed,
        tolerance_mm=args.tolerance_mm,
        metrics=tuple(args.metrics),
    )


def _print_summary(summary: dict) -> None:
    overall = summary["overall"]
    line = ", ".join(
        f"{k} click{'s' if k != '1' else ''}: "
        + (
            f"{v['dice']['mean']:.4f} ± {v['dice']['std']:.4f}"
            if v["dice"]["mean"] is not None
            else "n/a"
        )
        for k, v in overall.items()
    )
    failed = summary.get("n_failed", 0)
    note = f", {failed} failed (scored as misses)" if failed else ""
    print(f"Dice ({summary['n_targets']} targets, {summary['n_skipped']} skipped{note}): {line}")
    first = summary.get("click_honoured", {}).get("overall", {}).get("1")
    if first and first["recorded"]:
        print(
            f"first masks that contain their click: {first['honoured']} of {first['recorded']} "
            f"({first['share']:.0%})"
        )
    falls = summary.get("dice_falls", {}).get("overall")
    if falls and falls["clicks"]:
        print(
            f"clicks that lowered Dice by more than {summary['dice_falls']['threshold']}: "
            f"{falls['falls']} of {falls['clicks']} ({falls['share']:.0%})"
        )


def _check_scored(summary: dict, output: object) -> None:
    """A run that scored no target at all did not do its job (exit code 1)."""
    from sammed3d.cli import CommandFailed

    if summary["n_targets"] == 0:
        raise CommandFailed(
            f"no target was scored ({summary['n_skipped']} skipped; reasons in "
            f"{output}/skipped.csv)"
        )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sammed3d.cli import CLIError, CommandFailed
    from sammed3d.devices import resolve_device
    from sammed3d.evaluation.evaluator import (
        evaluate_targets,
        merge_results,
        parse_shard,
        shard_from_env,
    )
    from sammed3d.io import check_writable_folder

    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise CLIError(f"--output {output} is a file; give a folder")
    check_writable_folder(output)
    device = resolve_device(args.device)  # also validates the name for region-growing
    if args.merge:
        summary = merge_results(output, clicks=args.clicks)
        _print_summary(summary)
        print(f"results in {output}")
        _check_scored(summary, output)
        return 0
    if not args.data:
        raise CLIError("--data is required (or use --merge to rebuild the summary of --output)")
    config = eval_config(args)
    if args.shard:
        try:
            shard = parse_shard(args.shard)
        except ValueError:
            raise CLIError(
                f"--shard: expected I/N with 0 <= I < N, e.g. 0/4, got {args.shard!r}"
            ) from None
    else:
        shard = shard_from_env()
    if args.limit is not None and args.limit < 1:
        raise CLIError(f"--limit: expected a number of cases >= 1, got {args.limit}")
    if not Path(args.data).exists():
        raise CLIError(
            f"--data: expected a dataset folder or a manifest .csv, got {args.data}, "
            "which does not exist"
        )

    from sammed3d.data.layout import check_results_folder, discover_dataset, iter_targets

    cases = discover_dataset(args.data, split=args.split, layout=args.layout)
    check_results_folder(output, cases, root=args.data)  # before the model is loaded
    if args.limit:
        cases = cases[: args.limit]
    targets = iter_targets(cases)
    if args.classes:
        known = sorted({t.class_name for t in targets})
        missing = [c for c in args.classes if c not in known]
        if missing:
            raise CLIError(
                f"--classes: expected class names of the dataset ({', '.join(known)}), got "
                f"unknown class(es) {', '.join(missing)}"
            )
        targets = [t for t in targets if t.class_name in args.classes]

    from sammed3d.evaluation.methods import ModelMethod, RegionGrowing

    run_info: dict[str, object] = {"method": args.method.replace("-", "_")}
    method: ModelMethod | RegionGrowing
    if args.method == "sam-med3d":
        check_rule_args(args)
        # a file, a published name or the default: resolved once, by the checkpoint reader
        method = ModelMethod.from_checkpoint(
            args.checkpoint,
            device=str(device),
            allow_unsafe_pickle=args.allow_unsafe_pickle,
            accumulate_clicks=args.accumulate_clicks,
            extend=not args.no_extend,
            **rule_kwargs(args),
            choose_extent=args.choose_extent,
        )
        used = method.session.predictor.checkpoint
        if used is not None:  # --checkpoint, $SAMMED3D_CHECKPOINT or the bundled file
            from sammed3d.weights import sha256_cached

            # the file's content decides a resume (a copy or a moved checkout is the same
            # model, another file of the same name is not); its path is shown only
            run_info["checkpoint"] = str(used.resolve())
            run_info["checkpoint_sha256"] = sha256_cached(used)  # model_name hashes it too
        run_info["params"] = method.settings
        zoom = float(method.settings.get("zoom_spacing") or 0.0)
        if config.roi == "gt" and zoom > 0:  # a trial's lesion: 0.0006 here, 0.917 with click
            print(
                f"note: --roi gt centres the ROI on each target's box (the published protocol), "
                f"where this model's zoom-in for small objects ({zoom:g} mm) does not run; "
                "--roi click places it on the first click, as segment and serve do",
                file=sys.stderr,
            )
        if args.choose_extent:
            run_info["method"] = "sam_med3d_choose_extent"
    else:
        given = [
            flag
            for flag, value in (
                ("--checkpoint", args.checkpoint),
                ("--no-extend", args.no_extend),
                ("--accumulate-clicks", args.accumulate_clicks),
                *((flag, getattr(args, key) is not None) for flag, key in RULE_OPTIONS.items()),
                ("--choose-extent", args.choose_extent),
            )
            if value
        ]
        if given:
            raise CLIError(
                f"{', '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} to "
                "--method sam-med3d, not region-growing (the options of the model: "
                f"--checkpoint, --no-extend, --accumulate-clicks, {', '.join(RULE_OPTIONS)}, "
                "--choose-extent)"
            )
        method = RegionGrowing()
        run_info["params"] = {
            "multiplier": method.multiplier,
            "iterations": method.iterations,
            "radius": method.radius,
            "median_radius": method.median_radius,
            "roi_mm": method.roi_mm,
        }

    result = evaluate_targets(
        method,
        targets,
        output,
        config,
        run_info=run_info,
        shard=shard,
        show_progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    logger.info(
        "shard %d/%d: %d evaluated, %d already done, %d skipped",
        *result.shard,
        result.evaluated,
        result.resumed,
        result.skipped + result.resumed_skipped,
    )
    if result.summary is not None:
        _print_summary(result.summary)
        print(f"results in {output}")
    else:
        print(
            f"shard {result.shard[0]}/{result.shard[1]} done; results are merged by the last shard"
        )
    if result.skipped_reasons and any(r != "empty ground truth" for r in result.skipped_reasons):
        logger.warning(
            "some targets were skipped because of errors; see %s", output / "skipped.csv"
        )
    if result.failed:
        logger.warning(
            "the method failed on %d target(s), scored as misses; see %s",
            result.failed,
            output / "failed.csv",
        )
    if result.summary is not None:
        _check_scored(result.summary, output)
    elif result.evaluated == 0 and result.resumed == 0 and result.skipped > 0:
        raise CommandFailed(
            f"shard {result.shard[0]}/{result.shard[1]} scored no target ({result.skipped} "
            f"skipped; reasons in {output}/parts)"
        )
    return 0
