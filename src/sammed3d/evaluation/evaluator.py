"""The click-simulation evaluation harness (the paper's protocol, docs/faithfulness.md §6-§7).

For every binary target (one class of one case) the harness

1. reads the image and the label map and builds the **native-space** ground truth
   ``label == value`` (no resampling, no cropping);
2. starts a target on the method, with the ROI centred on the ground-truth bounding box
   (``roi="gt"``, the published protocol) or left to the method (``roi="click"``: centred
   on the first click, as a user gets it);
3. simulates clicks with :func:`sammed3d.clicks.sample_next_click` from the native ground truth
   and the method's current native prediction (click 1 from an empty prediction, i.e.
   from the ground truth alone; with ``roi="gt"`` from the ground truth inside the ROI when
   the method reports its ROI, as the published protocol clicks in the cropped ground
   truth), each with a generator seeded by ``(seed, target)`` so results do not depend on
   sharding, order or resumption;
4. after every click, computes Dice / NSD / IoU (and HD95 on request) in native space at the
   label file's physical spacing, and times the method call.

Outputs in ``output_dir``:

* ``parts/per_click.shard{I}of{N}.csv`` and ``parts/skipped.shard{I}of{N}.csv``: rows of each
  shard, appended one finished target at a time (resumable: finished targets are skipped,
  half-written ones redone);
* ``per_click.csv``, ``skipped.csv``, ``summary.json`` and ``dice_vs_clicks.png``: built by
  :func:`merge_results` from all parts once every shard of the run has finished (or on demand);
* ``config.json``: the settings that define the results; resuming with different settings is
  refused.

Which targets are scored depends on the data only, never on the method, so runs of different
methods on the same data cover the same targets and can be compared side by side: a target is
skipped (``skipped.csv``) only when its ground truth is empty or its files cannot be read or
disagree in grid. When a method fails on a target (its ``set_image``, ``start_target`` or
``add_click`` raises ``ValueError``), the target is still scored, as an empty prediction from
that point on (Dice 0, HD95 the worst case), and listed with the reason in ``failed.csv``.

HD95 of an empty prediction (a missed target) is the image diagonal in mm
(:func:`sammed3d.evaluation.metrics.worst_case_distance_mm`), so a missed structure never
improves a mean.

Example:
    >>> from sammed3d.data.layout import discover_dataset, iter_targets
    >>> from sammed3d.evaluation import EvalConfig, RegionGrowing, evaluate_targets
    >>> targets = iter_targets(discover_dataset("Dataset003_Liver", split="test"))
    >>> result = evaluate_targets(RegionGrowing(), targets, "eval_out",
    ...                           EvalConfig(clicks=(1, 3, 5), strategy=("random",)))
    >>> result.summary["overall"]["5"]["dice"]["mean"]
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sammed3d._wording import with_cli_wording
from sammed3d.clicks import sample_next_click
from sammed3d.data.layout import check_results_folder, undeclared_values
from sammed3d.evaluation.config import EvalConfig
from sammed3d.evaluation.methods import ClickMethod
from sammed3d.evaluation.metrics import (
    METRIC_NAMES,
    check_label_map,
    check_same_grid,
    compute_metrics,
    worst_case_distance_mm,
)
from sammed3d.evaluation.reports import (
    CSV_FIELDS,
    SKIPPED_FIELDS,
    append_rows,
    atomic_write_text,
    build_summary,
    complete_targets,
    format_rows,
    plot_dice_vs_clicks,
    read_rows,
    target_key,
    write_summary,
)
from sammed3d.io import Volume, VolumeError, read_volume

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
PARTS_DIR = "parts"
_PART_RE = re.compile(r"^(per_click|skipped|failed)\.shard(\d+)of(\d+)\.csv$")


@dataclass
class EvalResult:
    """What :func:`evaluate_targets` did.

    Attributes:
        output_dir: The output folder.
        shard: ``(index, count)``.
        evaluated: Targets evaluated in this call.
        resumed: Targets of this shard already evaluated before this call.
        resumed_skipped: Targets of this shard skipped before this call (not tried again).
        skipped: Targets skipped in this call (reasons in ``skipped.csv``).
        summary: The merged summary when this call completed the run, else None.
        skipped_reasons: The reasons of those skips.
        failed: Targets of this call on which the method failed (scored as empty predictions
            from the failure on; reasons in ``failed.csv``).
    """

    output_dir: Path
    shard: tuple[int, int]
    evaluated: int = 0
    resumed: int = 0
    resumed_skipped: int = 0
    skipped: int = 0
    summary: dict[str, Any] | None = None
    skipped_reasons: list[str] = field(default_factory=list)
    failed: int = 0


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/8"`` -> ``(2, 8)`` (0-based index, count)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m:
        raise ValueError(f"shard must look like I/N (e.g. 0/4), got {text!r}")
    index, count = int(m.group(1)), int(m.group(2))
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard index must satisfy 0 <= I < N, got {index}/{count}")
    return index, count


def shard_from_env(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``(RANK, WORLD_SIZE)`` from torchrun's environment, else ``(0, 1)``."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        return parse_shard(f"{env['RANK']}/{env['WORLD_SIZE']}")
    return 0, 1


def target_seed(seed: int, key: Sequence[Any]) -> list[int]:
    """Seed sequence of one target: independent of order, sharding and resumption."""
    return [int(seed), zlib.crc32("/".join(str(k) for k in key).encode("utf-8"))]


def _key_of(target: Any) -> tuple[str, str, str, int]:
    return (
        str(target.dataset),
        str(target.case_id),
        str(target.class_name),
        int(target.label_value),
    )


def _part_path(output_dir: Path, kind: str, shard: tuple[int, int]) -> Path:
    return output_dir / PARTS_DIR / f"{kind}.shard{shard[0]}of{shard[1]}.csv"


def _done_path(output_dir: Path, shard: tuple[int, int]) -> Path:
    return output_dir / PARTS_DIR / f"done.shard{shard[0]}of{shard[1]}"


def _part_files(output_dir: Path, kind: str) -> list[Path]:
    parts = output_dir / PARTS_DIR
    if not parts.is_dir():
        return []
    return sorted(
        p for p in parts.iterdir() if (m := _PART_RE.match(p.name)) and m.group(1) == kind
    )


#: ``config.json`` identity keys shown for a person but not compared on resume: the
#: checkpoint's path and the model's name (its ``run.checkpoint_sha256`` is compared; runs
#: written before ``run.model`` existed resume).
SHOWN_ONLY = frozenset({"run.checkpoint", "run.model"})


def run_name(method: str, model: str | None = None) -> str:
    """What a run is called in its progress bar, log lines and plot title: the model's name
    for the model's own clicks (``sam_med3d_demo``, not the method ``sam_med3d``), the method
    with the model for another method of it (``sam_med3d_choose_extent with
    sam_med3d_demo``), the method alone without a model (``region_growing``)."""
    if not model:
        return method
    return model if method == "sam_med3d" else f"{method} with {model}"


def _setting_name(key: str) -> str:
    """A ``config.json`` identity key as ``sammed3d evaluate`` spells the setting: the
    option (``tolerance_mm`` -> ``--tolerance-mm``, ``run.checkpoint`` -> ``--checkpoint``),
    or the model's settings for ``run.params``."""
    if key == "run.params":
        return "the model's settings (zoom, refinement, click rules)"
    if key == "run.uses_gt":
        return "--method"
    if key == "run.checkpoint_sha256":  # given, from $SAMMED3D_CHECKPOINT, or the bundled
        return "--checkpoint (the file's sha256)"
    return "--" + key.removeprefix("run.").replace("_", "-")


def _setting_diff(key: str, there: Any, now: Any) -> str:
    """``key``'s values in a refused resume, as ``"NAME: THERE there, NOW now"``; for the
    model's settings (a dict) only the first setting that differs is named, and how many
    more do."""
    if isinstance(there, dict) and isinstance(now, dict):
        subs = sorted(k for k in set(there) | set(now) if there.get(k) != now.get(k))
        if subs:
            more = f"; {len(subs) - 1} more differ" if len(subs) > 1 else ""
            sub = subs[0]
            return (
                f"the model's setting {sub}: {there.get(sub)!r} there, {now.get(sub)!r} now{more}"
            )
    if key == "run.checkpoint_sha256":  # a file: its hash's first digits tell it apart
        there, now = (v[:12] + "..." if isinstance(v, str) else v for v in (there, now))
    return f"{_setting_name(key)}: {there!r} there, {now!r} now"


def _write_config(
    output_dir: Path, config: EvalConfig, run_info: Mapping[str, Any], overwrite: bool
) -> None:
    """Write ``config.json``; refuse to resume a run made with other settings."""
    path = output_dir / CONFIG_NAME
    identity = {**config.identity(), **{f"run.{k}": v for k, v in run_info.items()}}
    identity = json.loads(json.dumps(identity, default=str))
    if path.exists() and not overwrite:
        try:
            old = read_config(output_dir)["identity"]
        except ValueError as exc:
            raise with_cli_wording(
                ValueError(f"{exc}; pass overwrite=True"), f"{exc}; use --overwrite"
            ) from None
        diff = sorted(
            k
            for k in set(old) | set(identity)
            if k not in SHOWN_ONLY and old.get(k) != identity.get(k)
        )
        if diff:
            held = (
                f"{output_dir} holds results made with other settings "
                f"({_setting_diff(diff[0], old.get(diff[0]), identity.get(diff[0]))})"
            )
            raise with_cli_wording(
                ValueError(f"{held}; use another output_dir or pass overwrite=True"),
                f"{held}; use another --output or --overwrite",
            )
    text = json.dumps(
        {"identity": identity, "clicks": list(config.clicks), "config": asdict(config)},
        indent=2,
        default=str,
    )
    atomic_write_text(path, text + "\n")


def read_config(output_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``config.json`` of an evaluation output folder, checked to be one this module wrote.

    Returns:
        ``{"identity": {...}, "clicks": [int, ...], "config": {"metrics": [...], ...}}``.

    Raises:
        FileNotFoundError: no ``config.json`` in ``output_dir``.
        ValueError: the file is not valid JSON or lacks those keys (edited, or from
            another program).
    """
    path = Path(output_dir) / CONFIG_NAME
    if not path.exists():
        raise FileNotFoundError(
            f"not an evaluation output folder (no {CONFIG_NAME}): {Path(output_dir)}"
        )
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not an evaluation config (not valid JSON: {exc})") from None
    problem = None
    if not isinstance(saved, dict):
        problem = f"a JSON {type(saved).__name__}, expected an object"
    elif not isinstance(saved.get("identity"), dict):
        problem = "no 'identity' object"
    elif not isinstance(saved.get("config"), dict) or not isinstance(
        saved["config"].get("metrics"), list
    ):
        problem = "no 'config' object with a 'metrics' list"
    elif (
        not isinstance(saved.get("clicks"), list)
        or not saved["clicks"]
        or not all(isinstance(k, int) and not isinstance(k, bool) for k in saved["clicks"])
    ):
        problem = "no 'clicks' list of integers"
    if problem is not None:
        raise ValueError(f"{path} is not an evaluation config ({problem})")
    return saved


def clear_results(output_dir: str | os.PathLike[str]) -> None:
    """Delete the files an evaluation wrote in ``output_dir`` (and nothing else)."""
    output_dir = Path(output_dir)
    names = (CONFIG_NAME, "per_click.csv", "skipped.csv", "failed.csv", "summary.json")
    for name in (*names, "dice_vs_clicks.png"):
        (output_dir / name).unlink(missing_ok=True)
    parts = output_dir / PARTS_DIR
    if parts.is_dir():
        for p in parts.iterdir():
            if _PART_RE.match(p.name) or p.name.startswith("done.shard"):
                p.unlink()
        if not any(parts.iterdir()):
            parts.rmdir()


def _read_skipped(paths: Sequence[Path]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for p in paths:
        rows.extend(read_rows(p, SKIPPED_FIELDS))
    return rows


def _shard_cases(targets: Sequence[Any], shard: tuple[int, int]) -> list[list[Any]]:
    """Group targets by case (image + label file) and keep this shard's cases."""
    cases: dict[tuple[str, str, str], list[Any]] = {}
    for t in targets:
        cases.setdefault((str(t.dataset), str(t.image), str(t.label)), []).append(t)
    groups = list(cases.values())
    return [g for i, g in enumerate(groups) if i % shard[1] == shard[0]]


def _load_case(image_path: Path, label_path: Path) -> tuple[Volume, Volume]:
    label = read_volume(label_path)
    check_label_map(label, f"label file {label_path.name}", max_labels=None)
    image = read_volume(image_path)
    try:
        check_same_grid(image, label)
    except VolumeError as exc:
        msg = str(exc).replace("prediction", "image").replace("ground-truth", "label")
        raise VolumeError(f"{label_path.name}: {msg}") from None
    return image, label


def _first_click_region(method: ClickMethod, gt: np.ndarray) -> np.ndarray:
    """The ground truth inside the method's ROI, if it tells (published: the crop's GT)."""
    contains = getattr(method, "roi_contains", None)
    if contains is None:
        return gt
    coords = np.argwhere(gt)
    inside = contains(coords)
    if inside is None:
        return gt
    inside = np.asarray(inside, dtype=bool)
    if inside.all() or not inside.any():
        return gt
    region = np.zeros_like(gt)
    region[tuple(coords[inside].T)] = True
    return region


def _run_target(
    method: ClickMethod,
    target: Any,
    gt: np.ndarray,
    spacing: Sequence[float],
    config: EvalConfig,
    failure: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Simulate the clicks of one target; returns its CSV rows and the failure reason, if any.

    ``failure`` (or a ``ValueError`` of the method) makes the prediction empty from that
    click on: the target is still scored, as a miss.
    """
    key = _key_of(target)
    rng = np.random.default_rng(target_seed(config.seed, key))
    roi_mask = gt if config.roi == "gt" else None
    first_gt = gt
    if failure is None:
        try:
            method.start_target(roi_mask=roi_mask, gt=gt if method.uses_gt else None)
            if roi_mask is not None:
                first_gt = _first_click_region(method, gt)
        except ValueError as exc:
            failure = _reason(exc)
    worst = worst_case_distance_mm(gt.shape, spacing)
    pred = np.zeros(gt.shape, dtype=bool)
    rows = []
    for k in range(1, config.max_clicks + 1):
        strategy = config.strategy_for(k)
        click = sample_next_click(
            pred, first_gt if k == 1 else gt, strategy=strategy, rng=rng, spacing=spacing
        )
        seconds = math.nan
        if failure is None:
            start = time.perf_counter()
            try:
                mask = np.asarray(method.add_click(click))
                seconds = round(time.perf_counter() - start, 4)
                if mask.shape != gt.shape:
                    raise ValueError(
                        f"method {method.name!r} returned a mask of shape {mask.shape}, "
                        f"expected the native shape {gt.shape}"
                    )
                pred = mask if mask.dtype == bool else mask != 0
            except ValueError as exc:
                failure = _reason(exc)
        if failure is not None:
            pred = np.zeros(gt.shape, dtype=bool)
        values = compute_metrics(
            pred,
            gt,
            spacing,
            tolerance_mm=config.tolerance_mm,
            metrics=config.metrics,
            hd95_missing=worst,
        )
        rows.append(
            {
                "dataset": key[0],
                "case": key[1],
                "class": key[2],
                "label": key[3],
                "modality": getattr(target, "modality", ""),
                "click": k,
                "strategy": strategy,
                "positive": click.positive,
                "coord_i": click.coord[0],
                "coord_j": click.coord[1],
                "coord_k": click.coord[2],
                "click_honoured": bool(pred[tuple(click.coord)]) == bool(click.positive),
                **values,
                "seconds": seconds,
            }
        )
    return rows, failure


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def evaluate_targets(
    method: ClickMethod,
    targets: Sequence[Any],
    output_dir: str | os.PathLike[str],
    config: EvalConfig | None = None,
    *,
    run_info: Mapping[str, Any] | None = None,
    shard: tuple[int, int] = (0, 1),
    show_progress: bool = True,
    overwrite: bool = False,
) -> EvalResult:
    """Evaluate a method on binary targets with simulated clicks (resumable, shardable).

    Args:
        method: Any :class:`~sammed3d.evaluation.methods.ClickMethod` (the model through
            ``ModelMethod``, the ``RegionGrowing`` baseline, an oracle).
        targets: :class:`sammed3d.data.layout.Target` objects (or anything with ``case_id``,
            ``image``, ``label``, ``label_value``, ``class_name``, ``modality``, ``dataset``).
        output_dir: Output folder (created).
        config: Protocol settings.
        run_info: Extra settings that define the results (method, checkpoint, ...), stored in
            ``config.json`` and checked on resume. ``method`` defaults to ``method.name``
            (the kind of method), ``model`` to ``method.model_name`` when it has one (the
            model's name, shown in the progress bar and the plot title; not compared).
        shard: ``(index, count)``: this process evaluates the cases with
            ``case_number % count == index``; the last shard to finish merges the results.
        show_progress: Show a tqdm progress bar.
        overwrite: Delete previous results in ``output_dir`` instead of resuming.

    Returns:
        Counts, and the summary if this call completed the run.

    Raises:
        ValueError: bad settings, or ``output_dir`` holds a run with other settings, or it is
            a folder that holds images or labels of ``targets``
            (:func:`~sammed3d.data.layout.check_results_folder`).
        TypeError: ``method`` is not a click method (a programming error).
    """
    from tqdm.auto import tqdm

    config = config or EvalConfig()
    run_info = dict(run_info or {})
    run_info.setdefault("method", getattr(method, "name", type(method).__name__))
    run_info.setdefault("uses_gt", bool(getattr(method, "uses_gt", False)))
    if not isinstance(method, ClickMethod):
        raise TypeError(
            f"method must implement set_image/start_target/add_click, got {type(method)}"
        )
    model = getattr(method, "model_name", None)
    if isinstance(model, str) and model:
        run_info.setdefault("model", model)
    name = run_name(str(run_info["method"]), run_info.get("model"))
    if not targets:
        raise ValueError("no targets to evaluate")
    keys = [_key_of(t) for t in targets]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"duplicate target {dup} (dataset, case, class, label)")
    shard = parse_shard(f"{shard[0]}/{shard[1]}")
    output_dir = Path(output_dir)
    check_results_folder(output_dir, targets)  # not among the images and labels it scores
    output_dir.mkdir(parents=True, exist_ok=True)
    if overwrite:
        if shard[1] == 1:
            clear_results(output_dir)
        else:  # other shards may be running: clear only this shard's own files
            for kind in ("per_click", "skipped", "failed"):
                _part_path(output_dir, kind, shard).unlink(missing_ok=True)
    _write_config(output_dir, config, run_info, overwrite)

    my_csv = _part_path(output_dir, "per_click", shard)
    my_skipped = _part_path(output_dir, "skipped", shard)
    my_failed = _part_path(output_dir, "failed", shard)
    _done_path(output_dir, shard).unlink(missing_ok=True)

    # resume: finished targets from any part file; drop half-written targets from ours
    all_rows = [r for p in _part_files(output_dir, "per_click") for r in read_rows(p)]
    evaluated = complete_targets(all_rows, config.max_clicks)
    skipped_before = {target_key(r) for r in _read_skipped(_part_files(output_dir, "skipped"))}
    finished = evaluated | skipped_before
    mine = read_rows(my_csv)
    kept = [r for r in mine if target_key(r) in finished]
    if len(kept) != len(mine):
        logger.info("%s: discarding %d rows of unfinished targets", my_csv, len(mine) - len(kept))
        atomic_write_text(my_csv, format_rows(kept, CSV_FIELDS, header=True))
    failed_rows = read_rows(my_failed, SKIPPED_FIELDS)
    failed_kept = [r for r in failed_rows if target_key(r) in finished]
    if len(failed_kept) != len(failed_rows):
        atomic_write_text(my_failed, format_rows(failed_kept, SKIPPED_FIELDS, header=True))

    groups = _shard_cases(targets, shard)
    total = sum(len(g) for g in groups)
    result = EvalResult(output_dir=output_dir, shard=shard)
    result.resumed = sum(1 for g in groups for t in g if _key_of(t) in evaluated)
    result.resumed_skipped = sum(
        1 for g in groups for t in g if _key_of(t) in skipped_before - evaluated
    )
    done = result.resumed + result.resumed_skipped
    if done:
        logger.info(
            "resuming: %d of %d targets already done (%d with results, %d skipped before)",
            done,
            total,
            result.resumed,
            result.resumed_skipped,
        )
    last_dice: list[float] = []
    with tqdm(
        total=total,
        initial=done,
        disable=not show_progress,
        desc=f"evaluate {name}" + (f" [{shard[0]}/{shard[1]}]" if shard[1] > 1 else ""),
        unit="target",
        dynamic_ncols=True,
    ) as bar:
        for group in groups:
            todo = [t for t in group if _key_of(t) not in finished]
            if not todo:
                continue
            try:
                image, label = _load_case(Path(todo[0].image), Path(todo[0].label))
            except (VolumeError, ValueError, FileNotFoundError) as exc:
                reason = _reason(exc)
                logger.error("skipping case %s: %s", todo[0].case_id, reason)
                _skip(my_skipped, todo, reason, result)
                bar.update(len(todo))
                continue
            declared = getattr(todo[0], "declared_values", ())
            extra = undeclared_values(label.array, declared) if declared else []
            if extra:
                logger.warning(
                    "case %s: %s holds label value(s) %s that its dataset.json does not "
                    "declare: not evaluated (a wrong label file?)",
                    todo[0].case_id,
                    Path(todo[0].label).name,
                    ", ".join(map(str, extra)),
                )
            case_failure = None
            try:
                modality = getattr(todo[0], "modality", None)
                method.set_image(image, modality=None if modality == "unknown" else modality)
            except ValueError as exc:  # the method's problem, not the data's: score as misses
                case_failure = _reason(exc)
                logger.error("%s fails on case %s: %s", name, todo[0].case_id, case_failure)
            for target in todo:
                gt = np.asarray(label.array) == target.label_value
                if not gt.any():
                    _skip(my_skipped, [target], "empty ground truth", result)
                    bar.update(1)
                    continue
                rows, failure = _run_target(
                    method, target, gt, label.spacing, config, failure=case_failure
                )
                append_rows(my_csv, rows, CSV_FIELDS)
                if failure is not None:
                    if failure != case_failure:
                        logger.error("%s fails on %s: %s", name, _key_of(target), failure)
                    _record(my_failed, [target], failure)
                    result.failed += 1
                result.evaluated += 1
                last_dice.append(float(rows[-1]["dice"]))
                bar.set_postfix(
                    {f"dice@{config.max_clicks}": f"{np.mean(last_dice):.3f}"}, refresh=False
                )
                bar.update(1)

    atomic_write_text(_done_path(output_dir, shard), "done\n")
    n_done = sum(_done_path(output_dir, (i, shard[1])).exists() for i in range(shard[1]))
    if n_done == shard[1]:
        result.summary = merge_results(output_dir)
    else:
        logger.info("shard %d/%d done; %d of %d shards finished", *shard, n_done, shard[1])
    return result


def _record(path: Path, targets: Sequence[Any], reason: str) -> None:
    rows = []
    for t in targets:
        dataset, case, cls, value = _key_of(t)
        rows.append(
            {"dataset": dataset, "case": case, "class": cls, "label": value, "reason": reason}
        )
    append_rows(path, rows, SKIPPED_FIELDS)


def _skip(path: Path, targets: Sequence[Any], reason: str, result: EvalResult) -> None:
    _record(path, targets, reason)
    result.skipped += len(targets)
    result.skipped_reasons.append(reason)


def merge_results(
    output_dir: str | os.PathLike[str], *, clicks: Sequence[int] | None = None
) -> dict[str, Any]:
    """Build ``per_click.csv``, ``skipped.csv``, ``summary.json`` and ``dice_vs_clicks.png``.

    Reads every part file in ``output_dir/parts`` (any shard count), keeps the targets whose
    clicks are complete (first copy wins), and derives the summary from those rows.

    Args:
        output_dir: An evaluation output folder.
        clicks: Click counts to report (default: those in ``config.json``); counts beyond
            its largest need every evaluated target's rows that far in the part files.

    Returns:
        The summary.

    Raises:
        FileNotFoundError: no ``config.json`` in ``output_dir``.
        ValueError: its ``config.json`` is not one :func:`evaluate_targets` wrote; ``clicks``
            go beyond the rows of some evaluated target.
    """
    output_dir = Path(output_dir)
    saved = read_config(output_dir)
    clicks = sorted({int(k) for k in (clicks or saved["clicks"])})
    metrics = [m for m in saved["config"]["metrics"] if m in METRIC_NAMES]
    # the rows up to the largest count reported, as a run with these clicks writes them;
    # counts beyond the last run's when the part files hold their rows (an earlier run of
    # the same settings simulated more clicks)
    saved_max = int(max(saved["clicks"]))
    max_clicks = clicks[-1]

    rows: list[dict[str, Any]] = []
    seen: set[tuple[Any, ...]] = set()
    for path in _part_files(output_dir, "per_click"):
        for r in read_rows(path):
            ident = (*target_key(r), int(r["click"]))
            if ident not in seen:
                seen.add(ident)
                rows.append(r)
    complete = complete_targets(rows, max_clicks)
    if max_clicks > saved_max:
        evaluated = complete_targets(rows, saved_max)
        short = evaluated - complete
        if short:
            reach = next(
                n for n in range(max_clicks - 1, saved_max - 1, -1)
                if complete_targets(rows, n) >= evaluated
            )  # fmt: skip
            raise ValueError(
                f"{len(short)} of the {len(evaluated)} evaluated targets in {output_dir} have "
                f"rows up to click {reach} only, not {max_clicks}: run the evaluation again "
                f"with --clicks up to {max_clicks} to simulate the rest"
            )
    rows = [r for r in rows if target_key(r) in complete and int(r["click"]) <= max_clicks]
    rows.sort(key=lambda r: (*target_key(r), int(r["click"])))
    skipped_all = _read_skipped(_part_files(output_dir, "skipped"))
    skipped: list[dict[str, Any]] = []
    skipped_keys: set[tuple[str, str, str, int]] = set()
    for s in skipped_all:
        key = target_key(s)
        if key not in complete and key not in skipped_keys:
            skipped_keys.add(key)
            skipped.append(s)
    skipped.sort(key=target_key)
    failed: list[dict[str, Any]] = []
    failed_keys: set[tuple[str, str, str, int]] = set()
    for f in _read_skipped(_part_files(output_dir, "failed")):
        key = target_key(f)
        if key in complete and key not in failed_keys:
            failed_keys.add(key)
            failed.append(f)
    failed.sort(key=target_key)

    atomic_write_text(output_dir / "per_click.csv", format_rows(rows, CSV_FIELDS, header=True))
    atomic_write_text(output_dir / "skipped.csv", format_rows(skipped, SKIPPED_FIELDS, header=True))
    atomic_write_text(output_dir / "failed.csv", format_rows(failed, SKIPPED_FIELDS, header=True))
    config = {
        **saved["config"],
        "clicks": clicks,  # what this summary reports (config.json keeps the last run's)
        **{k: v for k, v in saved["identity"].items() if "." in k},
    }
    summary = build_summary(
        rows, clicks, metrics=metrics, config=config, skipped=skipped, failed=failed
    )
    write_summary(output_dir / "summary.json", summary)
    identity = saved["identity"]
    name = run_name(str(identity.get("run.method", "")), identity.get("run.model"))
    if identity.get("run.checkpoint"):  # which file: the model's name may fit several
        name += f" ({Path(identity['run.checkpoint']).name})"
    plot_dice_vs_clicks(
        [r for r in rows if int(r["click"]) <= max(clicks)],
        output_dir / "dice_vs_clicks.png",
        title=f"{name}: Dice vs clicks ({len(complete)} targets)",
    )
    logger.info(
        "wrote %s (%d targets, %d skipped)",
        output_dir / "summary.json",
        len(complete),
        len(skipped),
    )
    return summary


__all__ = [
    "EvalResult",
    "clear_results",
    "evaluate_targets",
    "merge_results",
    "parse_shard",
    "read_config",
    "shard_from_env",
    "target_seed",
]
