"""``sammed3d prepare``: clean datasets of any known layout into the per-class training layout."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import TYPE_CHECKING, Any

from sammed3d.cli import dataclass_defaults
from sammed3d.data.cleaning_config import CleaningConfig  # light: no numpy

if TYPE_CHECKING:
    from sammed3d.data.prepare import PrepareResult

#: ``--layout`` choices (kept here so ``--help`` does not import the readers).
LAYOUTS = ("nnunet", "per-class", "totalsegmentator", "case-folders", "bids", "manifest")


def add_layout_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--layout`` option shared by ``prepare`` and ``evaluate``."""
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default=None,
        help="read the source(s) as this layout instead of detecting it (docs/data.md)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = dataclass_defaults(CleaningConfig)  # the one source of the paper's thresholds
    parser.add_argument(
        "sources",
        nargs="+",
        metavar="SRC",
        help="dataset folder (nnU-Net/MSD, per-class, TotalSegmentator, KiTS/LiTS/BraTS case "
        "folders, BIDS/VerSe), a folder of such folders, or a manifest .csv",
    )
    add_layout_argument(parser)
    parser.add_argument(
        "-o", "--output", required=True, help="output folder (new, empty, or a previous run)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes (default: %(default)s)"
    )
    parser.add_argument(
        "--split",
        choices=("train", "test", "auto"),
        default="train",
        help="which split of each source to read (default: %(default)s)",
    )
    spacing = parser.add_mutually_exclusive_group()
    spacing.add_argument(
        "--spacing",
        type=float,
        nargs="+",
        default=[1.5],
        metavar="MM",
        help="output spacing, one value or three (default: 1.5)",
    )
    spacing.add_argument(
        "--native-spacing", action="store_true", help="do not resample (keep each case's spacing)"
    )
    rules = parser.add_argument_group("cleaning rules (defaults: the paper's)")
    rules.add_argument(
        "--min-volume", type=float, default=defaults["min_volume_mm3"], metavar="MM3",
        help="step 1: drop masks smaller than this volume in mm³ (default: %(default)g)",
    )  # fmt: skip
    rules.add_argument(
        "--min-extent", type=float, default=defaults["min_extent_mm"], metavar="MM",
        help="step 1: drop masks with a bounding-box side below this (default: %(default)g)",
    )  # fmt: skip
    rules.add_argument(
        "--max-background", type=float, default=defaults["max_background_fraction"],
        metavar="FRACTION",
        help="step 2: drop masks whose background share exceeds this; 1 disables "
        "(default: %(default)g)",
    )  # fmt: skip
    rules.add_argument(
        "--background-crop", type=int, default=defaults["background_crop"], metavar="VOXELS",
        help="step 2: measure the background share in a cube of this edge around the mask "
        "(e.g. 128, the training crop) instead of the whole volume",
    )  # fmt: skip
    rules.add_argument(
        "--max-components", type=int, default=defaults["max_components"], metavar="N",
        help="step 3: keep the N largest connected components; 0 keeps all (default: %(default)s)",
    )  # fmt: skip
    rules.add_argument(
        "--connectivity", type=int, choices=(6, 18, 26), default=defaults["connectivity"],
        help="voxel connectivity of components (default: %(default)s)",
    )  # fmt: skip
    rules.add_argument(
        "--no-split",
        dest="split_paired",
        action="store_false",
        default=defaults["split_paired"],
        help="step 4 off: do not split paired structures",
    )
    rules.add_argument(
        "--paired", metavar="NAMES",
        help="step 4: comma-separated paired class names to split, replacing the built-in list",
    )  # fmt: skip
    parser.add_argument("--no-histograms", action="store_true", help="skip the PNG histograms")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def _plural(count: int, noun: str) -> str:
    """``1 case``, ``2 cases``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _check_options(args: argparse.Namespace) -> None:
    """Raises :class:`CLIError` naming the option, as typed, whose value is refused (the
    library's own checks name its fields: ``max_background_fraction``)."""
    from sammed3d.cli import CLIError

    if args.workers < 1:
        raise CLIError(f"--workers: expected a number of processes >= 1, got {args.workers}")
    if args.spacing is not None and not args.native_spacing:
        if len(args.spacing) not in (1, 3):
            raise CLIError(f"--spacing: expected 1 or 3 values, got {len(args.spacing)}")
        if not all(math.isfinite(v) and v > 0 for v in args.spacing):
            raise CLIError(
                "--spacing: expected positive spacings in mm, got "
                + " ".join(f"{v:g}" for v in args.spacing)
            )
    for flag, value in (("--min-volume", args.min_volume), ("--min-extent", args.min_extent)):
        if not (math.isfinite(value) and value >= 0):
            raise CLIError(f"{flag}: expected a finite number >= 0, got {value:g}")
    if not 0.0 <= args.max_background <= 1.0:
        raise CLIError(
            f"--max-background: expected a fraction in [0, 1], got {args.max_background:g}"
        )
    if args.background_crop is not None and args.background_crop < 1:
        raise CLIError(
            f"--background-crop: expected a cube edge >= 1 voxel, got {args.background_crop}"
        )
    if args.max_components < 0:
        raise CLIError(
            f"--max-components: expected a number >= 0 (0 keeps all), got {args.max_components}"
        )


def cleaning_config(args: argparse.Namespace) -> CleaningConfig:
    """The cleaning thresholds of parsed ``prepare`` arguments.

    Raises:
        CLIError: ``--paired`` names no class or has an empty item, or a threshold that
            :class:`CleaningConfig` would refuse (the message names the option).
    """
    from sammed3d.cli import CLIError

    _check_options(args)
    paired = {}  # not given: the dataclass's list
    if args.paired is not None:
        names = tuple(n.strip() for n in args.paired.split(","))
        if not any(names):
            raise CLIError(
                f"--paired: expected at least one class name, e.g. --paired kidney,lung, "
                f"got {args.paired!r}"
            )
        if not all(names):
            raise CLIError(
                f"--paired: expected comma-separated class names without empty items, "
                f"e.g. kidney,lung, got {args.paired!r}"
            )
        paired["paired_classes"] = names
    return CleaningConfig(
        min_volume_mm3=args.min_volume,
        min_extent_mm=args.min_extent,
        max_background_fraction=args.max_background,
        background_crop=args.background_crop,
        max_components=args.max_components,
        connectivity=args.connectivity,
        split_paired=args.split_paired,
        **paired,
    )


#: The option that sets each cleaning rule's threshold (named next to the rule's count).
RULE_OPTIONS = {
    "min_volume": "--min-volume",
    "min_extent": "--min-extent",
    "max_background": "--max-background",
}


def _by_rule(counts: dict[str, int], cleaning: CleaningConfig, *, options: bool = False) -> str:
    """``"2 smaller than 1000 mm³ (--min-volume), 1 empty (...)"``: counts per rule, most
    frequent first, each with what the rule means (and, with ``options``, its option)."""
    from sammed3d.data.curation_report import describe_rule

    parts = []
    for rule, n in counts.items():
        option = RULE_OPTIONS.get(rule) if options else None
        parts.append(f"{n} {describe_rule(rule, cleaning)}" + (f" ({option})" if option else ""))
    return ", ".join(parts)


def _print_summary(result: PrepareResult, cleaning: CleaningConfig) -> None:
    """The console summary of a run: one count line, why masks were dropped and cases
    failed or were skipped (per rule), where the details are."""
    from sammed3d.data.curation_report import rule_counts

    # the three parts add up: prepared + failed + skipped = found
    prepared = result.cases - result.cases_skipped - result.cases_failed
    print(
        f"prepared {prepared} of {_plural(result.cases, 'case')} ({result.cases_failed} failed, "
        f"{result.cases_skipped} skipped; {result.cases_resumed} taken from an earlier run): "
        f"{_plural(result.kept, 'mask')} kept, {result.dropped} dropped"
    )
    report = result.report.name
    if result.dropped:
        dropped = rule_counts(result.records, "dropped")
        print(
            f"dropped {_plural(result.dropped, 'mask')}: "
            f"{_by_rule(dropped, cleaning, options=True)}; see 'by_rule' in {report}"
        )
    print(f"manifest: {result.manifest}")
    print(f"report:   {result.report}")
    if result.cases_skipped:
        reasons = _by_rule(rule_counts(result.records, "skipped"), cleaning)
        print(
            f"warning: {_plural(result.cases_skipped, 'case')} skipped ({reasons}) and not "
            f"prepared; see 'skipped' in {report}",
            file=sys.stderr,
        )
    if result.cases_failed:
        failed = _failed_by_rule(result.records)
        print(
            f"warning: {_plural(result.cases_failed, 'case')} failed ({failed}); "
            f"see 'errors' in {report}",
            file=sys.stderr,
        )
    if result.dropped and not result.kept:
        print(
            "warning: no mask was kept: nothing here to train on; loosen the cleaning "
            "thresholds named above (sammed3d prepare --help) or see the report",
            file=sys.stderr,
        )
    # names not in the category catalogue: prepare_datasets has logged a warning


def _failed_by_rule(records: list[dict[str, Any]]) -> str:
    """``"1 integrity:shape, 1 error"``: failed cases (not masks: a case fails whole) per rule."""
    from collections import Counter

    rules = {
        (r.get("source"), r.get("dataset"), r.get("case"), r.get("image")): r.get("rule")
        for r in records
        if r.get("status") == "error"
    }
    counts = Counter(str(rule or "error") for rule in rules.values())
    return ", ".join(
        f"{n} {rule}" for rule, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    )


def run(args: argparse.Namespace) -> int:
    from sammed3d.data.curation_report import rule_counts
    from sammed3d.data.prepare import prepare_datasets
    from sammed3d.io import check_writable_folder

    check_writable_folder(args.output)  # before any work

    cleaning = cleaning_config(args)
    result = prepare_datasets(
        args.sources,
        args.output,
        cleaning=cleaning,
        target_spacing=None if args.native_spacing else args.spacing,
        split=args.split,
        workers=args.workers,
        show_progress=not args.no_progress,
        histograms=not args.no_histograms,
        layout=args.layout,
    )
    summary = {
        "output": str(result.output),
        "cases": result.cases,
        "cases_resumed": result.cases_resumed,
        "cases_failed": result.cases_failed,
        "cases_skipped": result.cases_skipped,
        "kept": result.kept,
        "dropped": result.dropped,
        "dropped_by_rule": rule_counts(result.records, "dropped"),
        "skipped_by_rule": rule_counts(result.records, "skipped"),
        "unmapped": result.unmapped,
        "manifest": str(result.manifest),
        "catalogue": str(result.catalogue),
        "report": str(result.report),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(result, cleaning)
    if result.cases and result.cases_failed + result.cases_skipped == result.cases:
        from sammed3d.cli import CommandFailed

        which = (
            f"every case failed ({result.cases_failed})"
            if not result.cases_skipped
            else f"every case failed or was skipped ({result.cases_failed} failed, "
            f"{result.cases_skipped} skipped)"
        )
        raise CommandFailed(f"{which}; nothing was prepared (see {result.report})")
    return 0
