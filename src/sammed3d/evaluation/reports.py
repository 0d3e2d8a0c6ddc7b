"""Evaluation outputs: the per-click CSV, the summary derived from it, and the Dice plot.

The CSV is the source of truth; :func:`build_summary` derives every number of
``summary.json`` from its rows, so the two always agree (and a summary can be rebuilt from the
CSV alone).

One convention for missing values in every CSV (parts and merged files alike): ``nan`` is a
value that was computed and is undefined (e.g. the time of a click the method failed on); an
empty cell is a value that was not computed (a metric not asked for with ``--metrics``).
:func:`read_rows` reads them back as ``nan`` and ``None``, and :func:`format_rows` writes them
the same way, so merging never turns one into the other. JSON writes both as ``null``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sammed3d.evaluation.metrics import json_safe, summarize
from sammed3d.io import atomic_write, atomic_write_text

logger = logging.getLogger(__name__)

#: Columns of ``per_click.csv``, in order. ``class`` is the class name, ``label`` its value in
#: the label file; ``coord_*`` the click in native voxel indices; ``click_honoured`` whether
#: the mask returned for that click agrees with it (a positive click inside the mask, a
#: negative one outside); ``seconds`` the method's time of that click (click 1 includes
#: computing the image embedding of the ROI).
CSV_FIELDS: tuple[str, ...] = (
    "dataset",
    "case",
    "class",
    "label",
    "modality",
    "click",
    "strategy",
    "positive",
    "coord_i",
    "coord_j",
    "coord_k",
    "click_honoured",
    "dice",
    "nsd",
    "iou",
    "hd95",
    "seconds",
)
SKIPPED_FIELDS: tuple[str, ...] = ("dataset", "case", "class", "label", "reason")

_INT_FIELDS = ("label", "click", "coord_i", "coord_j", "coord_k")
#: Columns added after the first files were written: a file without them is still read (the
#: value is None: not recorded), so older runs can be resumed and merged.
OPTIONAL_FIELDS: tuple[str, ...] = ("click_honoured",)
#: A click "lowers Dice" when the target's Dice after it is below the Dice before it by more
#: than this (summary key ``dice_falls``).
DICE_FALL_THRESHOLD = 0.05
_FLOAT_FIELDS = ("dice", "nsd", "iou", "hd95", "seconds")

TargetKey = tuple[str, str, str, int]


def target_key(row: Mapping[str, Any]) -> TargetKey:
    """The identity of a target in CSV rows: ``(dataset, case, class, label)``."""
    return (str(row["dataset"]), str(row["case"]), str(row["class"]), int(row["label"]))


def _format_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    return str(value)


def format_rows(rows: Iterable[Mapping[str, Any]], fields: Sequence[str], header: bool) -> str:
    """Rows as CSV text (missing fields are empty)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(fields)
    for row in rows:
        writer.writerow([_format_value(row.get(f)) for f in fields])
    return buf.getvalue()


def _header(path: Path) -> list[str]:
    with open(path, encoding="utf-8", newline="") as f:
        return next(csv.reader(f), [])


def append_rows(path: Path, rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> None:
    """Append rows in one write (header first if the file is new), flushed to disk.

    A file written with other columns (an older version's, see :data:`OPTIONAL_FIELDS`) is
    first rewritten, atomically, with ``fields`` as its header, so its rows stay aligned.
    """
    new = not path.exists() or path.stat().st_size == 0
    if not new and _header(path) != list(fields):
        old = read_rows(path, fields)
        atomic_write_text(path, format_rows([*old, *rows], fields, header=True))
        return
    text = format_rows(rows, fields, header=new)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _parse(row: dict[str, str], fields: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in fields:
        raw = row.get(name)
        if raw is None:
            if name in OPTIONAL_FIELDS:
                out[name] = None
                continue
            raise ValueError(f"missing column {name}")
        if name in _INT_FIELDS:
            out[name] = int(raw)
        elif name in _FLOAT_FIELDS:
            out[name] = float(raw) if raw != "" else None  # empty: not computed
        elif name == "positive":
            out[name] = raw == "1"
        elif name == "click_honoured":
            out[name] = None if raw == "" else raw == "1"
        else:
            out[name] = raw
    return out


def read_rows(path: str | os.PathLike[str], fields: Sequence[str] = CSV_FIELDS) -> list[dict]:
    """Read rows written by :func:`append_rows`; a truncated or malformed line is dropped.

    Raises:
        ValueError: the header lacks required columns (not a file this module wrote).
    """
    path = Path(path)
    if not path.exists():
        return []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [
            c for c in fields if c not in (reader.fieldnames or []) and c not in OPTIONAL_FIELDS
        ]
        if missing:
            raise ValueError(f"{path} is not an evaluation CSV: missing columns {missing}")
        rows = []
        for n, raw in enumerate(reader, start=2):
            try:
                rows.append(_parse(raw, fields))
            except (ValueError, TypeError):
                logger.warning("%s: dropping malformed line %d (interrupted write?)", path, n)
    return rows


def complete_targets(rows: Iterable[Mapping[str, Any]], max_clicks: int) -> set[TargetKey]:
    """Targets whose rows cover clicks ``1..max_clicks``."""
    seen: dict[TargetKey, set[int]] = {}
    for row in rows:
        seen.setdefault(target_key(row), set()).add(int(row["click"]))
    needed = set(range(1, max_clicks + 1))
    return {key for key, clicks in seen.items() if needed <= clicks}


def _group_summary(
    rows: Sequence[Mapping[str, Any]], clicks: Sequence[int], metrics: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """``{click: {metric: summarize(...)}}`` for the rows of one group."""
    by_click: dict[int, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_click.setdefault(int(row["click"]), []).append(row)
    out: dict[str, dict[str, Any]] = {}
    for k in clicks:
        selected = by_click.get(k, [])
        out[str(k)] = {m: summarize(float(r[m]) for r in selected) for m in metrics}
        out[str(k)]["targets"] = len(selected)
    return out


def _honoured_summary(
    rows: Sequence[Mapping[str, Any]], clicks: Sequence[int]
) -> dict[str, dict[str, Any]]:
    """``{click: {honoured, recorded, share}}``: how many k-th masks agree with the k-th click."""
    out: dict[str, dict[str, Any]] = {}
    for k in clicks:
        values = [
            bool(r["click_honoured"])
            for r in rows
            if int(r["click"]) == k and r.get("click_honoured") is not None
        ]
        out[str(k)] = {
            "honoured": sum(values),
            "recorded": len(values),
            "share": sum(values) / len(values) if values else None,
        }
    return out


def _falls_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Clicks after the first whose Dice is below the previous click's by more than the
    threshold (:data:`DICE_FALL_THRESHOLD`), over every click of every target in ``rows``."""
    dice: dict[TargetKey, dict[int, float]] = {}
    for r in rows:
        dice.setdefault(target_key(r), {})[int(r["click"])] = float(r["dice"])
    compared = falls = 0
    for by_click in dice.values():
        for k, value in by_click.items():
            before = by_click.get(k - 1)
            if before is None or not (math.isfinite(value) and math.isfinite(before)):
                continue
            compared += 1
            falls += value < before - DICE_FALL_THRESHOLD
    return {"clicks": compared, "falls": falls, "share": falls / compared if compared else None}


def build_summary(
    rows: Sequence[Mapping[str, Any]],
    clicks: Sequence[int],
    *,
    metrics: Sequence[str] = ("dice", "nsd", "iou"),
    config: Mapping[str, Any] | None = None,
    skipped: Sequence[Mapping[str, Any]] = (),
    failed: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Summary statistics derived from per-click rows.

    Every target counts once per click count. ``overall`` pools all targets (micro average);
    ``mean_of_classes`` averages the per-class means (macro average); ``per_class`` groups by
    class name, ``per_dataset`` by dataset. ``max_dice_up_to`` is the legacy
    ``validation.py`` summary: each target's best Dice over clicks ``1..k``, averaged.
    ``click_honoured`` counts, per click count, the masks that agree with their newest click
    (a positive click inside, a negative one outside; rows of older files without the column
    are not counted); ``dice_falls`` counts the clicks after the first that lowered the
    target's Dice by more than :data:`DICE_FALL_THRESHOLD` (every click ``2..max`` of the
    rows, not only ``clicks``). Both are given overall, per class and per dataset.
    Non-finite values are excluded from means and counted (``n_nan``/``n_inf``).

    Args:
        rows: Rows as read by :func:`read_rows`.
        clicks: Click counts to report (e.g. ``(1, 3, 5, 10)``).
        metrics: Metric columns to summarise.
        config: Run configuration to embed.
        skipped: Skipped targets (``SKIPPED_FIELDS`` rows).
        failed: Targets the method failed on (scored as misses; ``SKIPPED_FIELDS`` rows).

    Returns:
        A JSON-ready dict (non-finite floats already replaced by None).
    """
    clicks = sorted({int(k) for k in clicks})
    metrics = list(metrics)
    targets = sorted({target_key(r) for r in rows})
    by_class: dict[str, list[Mapping[str, Any]]] = {}
    by_dataset: dict[str, list[Mapping[str, Any]]] = {}
    by_target: dict[TargetKey, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_class.setdefault(str(row["class"]), []).append(row)
        by_dataset.setdefault(str(row["dataset"]), []).append(row)
        by_target.setdefault(target_key(row), []).append(row)

    per_class = {name: _group_summary(r, clicks, metrics) for name, r in sorted(by_class.items())}
    macro: dict[str, dict[str, Any]] = {}
    for k in clicks:
        macro[str(k)] = {}
        for m in metrics:
            means = [
                per_class[c][str(k)][m]["mean"]
                for c in per_class
                if per_class[c][str(k)][m]["mean"] is not None
            ]
            macro[str(k)][m] = summarize(means)
    best: dict[str, dict[str, Any]] = {}
    for k in clicks:
        values = [
            max(float(r["dice"]) for r in trows if int(r["click"]) <= k)
            for trows in by_target.values()
            if any(int(r["click"]) <= k for r in trows)
        ]
        best[str(k)] = summarize(values)
    first_seconds = [float(r["seconds"]) for r in rows if int(r["click"]) == 1]
    later_seconds = [float(r["seconds"]) for r in rows if int(r["click"]) > 1]
    summary = {
        "config": dict(config or {}),
        "clicks": clicks,
        "metrics": metrics,
        "n_targets": len(targets),
        "n_cases": len({(t[0], t[1]) for t in targets}),
        "n_skipped": len(skipped),
        "skipped": [dict(s) for s in skipped],
        "n_failed": len(failed),
        "failed": [dict(f) for f in failed],
        "overall": _group_summary(rows, clicks, metrics),
        "mean_of_classes": macro,
        "per_class": per_class,
        "per_dataset": {
            name: _group_summary(r, clicks, metrics) for name, r in sorted(by_dataset.items())
        },
        "max_dice_up_to": best,
        "click_honoured": {
            "overall": _honoured_summary(rows, clicks),
            "per_class": {n: _honoured_summary(r, clicks) for n, r in sorted(by_class.items())},
            "per_dataset": {n: _honoured_summary(r, clicks) for n, r in sorted(by_dataset.items())},
        },
        "dice_falls": {
            "threshold": DICE_FALL_THRESHOLD,
            "overall": _falls_summary(rows),
            "per_class": {n: _falls_summary(r) for n, r in sorted(by_class.items())},
            "per_dataset": {n: _falls_summary(r) for n, r in sorted(by_dataset.items())},
        },
        "seconds": {
            "first_click": summarize(first_seconds),
            "later_clicks": summarize(later_seconds),
        },
    }
    return json_safe(summary)


def write_summary(path: str | os.PathLike[str], summary: Mapping[str, Any]) -> Path:
    """Write ``summary.json`` atomically."""
    return atomic_write_text(path, json.dumps(json_safe(summary), indent=2) + "\n")


def plot_dice_vs_clicks(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    title: str = "",
    max_classes: int = 12,
) -> Path:
    """Mean Dice (± std band) against the number of clicks, overall and per class.

    Uses every click count present in ``rows``. Classes beyond ``max_classes`` (the ones with
    the fewest targets) are left out of the plot (not out of the overall curve).
    """
    from matplotlib.figure import Figure

    def curve(group: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        by_click: dict[int, list[float]] = {}
        for r in group:
            by_click.setdefault(int(r["click"]), []).append(float(r["dice"]))
        ks = np.array(sorted(by_click))
        vals = [np.asarray(by_click[k]) for k in ks]
        means = np.array([np.nanmean(v) if np.isfinite(v).any() else np.nan for v in vals])
        stds = np.array([np.nanstd(v) if np.isfinite(v).any() else np.nan for v in vals])
        return ks, means, stds

    by_class: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_class.setdefault(str(r["class"]), []).append(r)
    classes = sorted(by_class, key=lambda c: (-len(by_class[c]), c))[:max_classes]

    fig = Figure(figsize=(7, 4.5), dpi=120)
    ax = fig.add_subplot()
    for name in sorted(classes):
        ks, means, _ = curve(by_class[name])
        ax.plot(ks, means, marker=".", linewidth=1, alpha=0.7, label=name)
    if rows:
        ks, means, stds = curve(rows)
        ax.plot(ks, means, color="black", marker="o", linewidth=2.5, label="overall")
        ax.fill_between(ks, means - stds, means + stds, color="black", alpha=0.1)
        ax.set_xticks(ks)
    ax.set_xlabel("number of clicks")
    ax.set_ylabel("Dice")
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.set_title(title or "Dice vs clicks")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    return atomic_write(path, fig.savefig, suffix=".png")


__all__ = [
    "CSV_FIELDS",
    "DICE_FALL_THRESHOLD",
    "OPTIONAL_FIELDS",
    "SKIPPED_FIELDS",
    "append_rows",
    "atomic_write_text",
    "build_summary",
    "complete_targets",
    "format_rows",
    "plot_dice_vs_clicks",
    "read_rows",
    "target_key",
    "write_summary",
]
