"""Category catalogue, summary report and PNG histograms of a ``sammed3d prepare`` manifest.

All functions take manifest records (dicts, see :mod:`sammed3d.data.prepare`) so they can be
re-run on an existing ``manifest.jsonl`` (:func:`sammed3d.data.prepare.read_manifest`).
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sammed3d.data.cleaning import CleaningConfig

logger = logging.getLogger(__name__)

#: PNG files written by :func:`write_histograms`.
HISTOGRAM_FILES = (
    "report_volume.png",
    "report_extent.png",
    "report_components.png",
    "report_rules.png",
    "report_classes.png",
)


def build_catalogue(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Categories across datasets, keyed by normalised class name.

    ``"Liver"`` in one dataset and ``"liver"`` in another are one category ``"liver"``; a
    split paired structure gives ``"kidney_left"`` and ``"kidney_right"`` (``paired_of``:
    ``"kidney"``).

    Returns:
        ``{"categories": {name: {...}}, "num_categories": n, "unmapped": [...]}``. Each
        category lists the source spellings (``source_names``), the ``(dataset, modality,
        source class, label value)`` sources, its datasets and modalities, kept/dropped mask
        counts, ``mapped`` (whether the shipped catalogue knows it, see
        :mod:`sammed3d.data.categories`) and its ``group`` there. ``unmapped`` lists the
        categories named after a source spelling the catalogue does not know. Records without
        a class (missing files) are not categories.
    """
    from sammed3d.data.categories import default_catalogue

    known = default_catalogue().categories
    cats: dict[str, dict[str, Any]] = {}
    sources: dict[str, set[tuple[str, str, str, int]]] = defaultdict(set)
    for r in records:
        name = r.get("class_name")
        if not name:
            continue
        cat = cats.setdefault(
            name,
            {
                "name": name,
                "paired_of": None,
                "side": None,
                "source_names": set(),
                "datasets": set(),
                "modalities": set(),
                "kept": 0,
                "dropped": 0,
                "error": 0,
            },
        )
        if r.get("side"):
            cat["side"] = r["side"]
            cat["paired_of"] = name.rsplit("_", 1)[0]
        if r.get("source_class"):
            cat["source_names"].add(r["source_class"])
        cat["datasets"].add(r.get("dataset") or "")
        cat["modalities"].add(r.get("modality") or "unknown")
        status = r.get("status", "error")
        cat[status if status in ("kept", "dropped") else "error"] += 1
        sources[name].add(
            (
                r.get("dataset") or "",
                r.get("modality") or "unknown",
                r.get("source_class") or "",
                int(r.get("label_value") or 0),
            )
        )
    out: dict[str, Any] = {}
    for name in sorted(cats):
        cat = cats[name]
        cat["mapped"] = name in known
        cat["group"] = known[name].group if name in known else None
        for key in ("source_names", "datasets", "modalities"):
            cat[key] = sorted(cat[key])
        cat["sources"] = [
            {"dataset": d, "modality": m, "source_class": c, "label_value": v}
            for d, m, c, v in sorted(sources[name])
        ]
        out[name] = cat
    unmapped = sorted(n for n, c in out.items() if not c["mapped"])
    return {"num_categories": len(out), "unmapped": unmapped, "categories": out}


def build_report(
    records: Iterable[Mapping[str, Any]], settings: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Counts per class, rule, dataset and modality, plus the lists of failed and skipped cases.

    Skipped cases (status ``"skipped"``: a missing image or label file, a bad manifest row)
    have no class: they are counted in ``totals.cases_skipped`` and listed under ``skipped``
    (dataset, case, rule, the file concerned and the message), not in the per-mask counts.
    """
    records = list(records)
    skipped = [_skipped_entry(r) for r in records if r.get("status") == "skipped"]
    records = [r for r in records if r.get("status") != "skipped"]
    by_rule: Counter[str] = Counter()
    by_class: dict[str, dict[str, Any]] = {}
    by_dataset: dict[str, Counter[str]] = defaultdict(Counter)
    by_modality: dict[str, Counter[str]] = defaultdict(Counter)
    errors: list[dict[str, Any]] = []
    seen_errors: set[tuple[str, str, str]] = set()
    unmapped: dict[str, dict[str, Any]] = {}
    removed = Counter()
    for r in records:
        status = r.get("status", "error")
        rule = r.get("rule")
        if status != "kept":
            by_rule[rule or "unknown"] += 1
        name = r.get("class_name") or "(unknown)"
        entry = by_class.setdefault(name, {"kept": 0, "dropped": 0, "error": 0, "rules": {}})
        entry[status if status in entry else "error"] += 1
        if status != "kept":
            entry["rules"][rule or "unknown"] = entry["rules"].get(rule or "unknown", 0) + 1
        by_dataset[f"{r.get('modality')}_{r.get('dataset')}"][status] += 1
        by_modality[str(r.get("modality"))][status] += 1
        if r.get("category_mapped") is False and r.get("source_class"):
            entry = unmapped.setdefault(
                str(r["source_class"]),
                {"class_name": r.get("class_name"), "datasets": set(), "masks": 0},
            )
            entry["datasets"].add(str(r.get("dataset")))
            entry["masks"] += 1
        if status == "kept":
            removed["components"] += int(r.get("components_removed") or 0)
            removed["voxels"] += int(r.get("voxels_removed") or 0)
        if status == "error":
            key = (str(r.get("source")), str(r.get("case")), str(r.get("message")))
            if key not in seen_errors:
                seen_errors.add(key)
                errors.append(
                    {
                        "dataset": r.get("dataset"),
                        "case": r.get("case"),
                        "rule": rule,
                        "message": r.get("message"),
                    }
                )
    cases = {(r.get("source"), r.get("case"), r.get("image"), r.get("label")) for r in records}
    return {
        "settings": dict(settings or {}),
        "totals": {
            "cases": len(cases) + len(skipped),
            "cases_failed": len({(e["dataset"], e["case"]) for e in errors}),
            "cases_skipped": len(skipped),
            "masks": len(records),
            "kept": sum(r.get("status") == "kept" for r in records),
            "dropped": sum(r.get("status") == "dropped" for r in records),
            "error": sum(r.get("status") == "error" for r in records),
            "categories_kept": len(
                {r.get("class_name") for r in records if r.get("status") == "kept"}
            ),
            "components_removed": removed["components"],
            "voxels_removed": removed["voxels"],
        },
        "by_rule": dict(sorted(by_rule.items())),
        "by_class": dict(sorted(by_class.items())),
        "by_dataset": {k: dict(v) for k, v in sorted(by_dataset.items())},
        "by_modality": {k: dict(v) for k, v in sorted(by_modality.items())},
        "errors": errors,
        "skipped": skipped,
        "unmapped_names": {
            name: {**e, "datasets": sorted(e["datasets"])} for name, e in sorted(unmapped.items())
        },
    }


def _skipped_entry(record: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "dataset": record.get("dataset"),
        "case": record.get("case"),
        "rule": record.get("rule"),
        "file": record.get("file"),
        "message": record.get("message"),
    }


def rule_counts(records: Iterable[Mapping[str, Any]], status: str) -> dict[str, int]:
    """How many records of ``status`` (``"dropped"``, ``"error"``, ``"skipped"``) each rule
    gave, most frequent first (ties by rule name)."""
    counts = Counter(str(r.get("rule") or "unknown") for r in records if r.get("status") == status)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def describe_rule(rule: str, cleaning: CleaningConfig | None = None) -> str:
    """What a manifest ``rule`` means, in a few words, with the threshold it applied.

    ``"min_volume"`` -> ``"smaller than 1000 mm³"``; a rule without a description (an
    ``integrity:<what>`` check, ``error``) is returned as it is.
    """
    c = cleaning or CleaningConfig()
    where = "the volume" if c.background_crop is None else f"the {c.background_crop}³ crop"
    descriptions = {
        "empty": "empty (the class is absent from the case)",
        "min_volume": f"smaller than {c.min_volume_mm3:g} mm³",
        "min_extent": f"with a bounding-box side under {c.min_extent_mm:g} mm",
        "max_background": f"with background over {100 * c.max_background_fraction:g}% of {where}",
        "duplicate_class": "a second mask of a category already written for the case",
        "missing_file": "with a missing image or label file",
        "duplicate_row": "repeating an earlier manifest row",
        "bad_row": "from an unreadable manifest row",
        "no_label_names": "with a label file whose label names are missing",
    }
    return descriptions.get(rule, rule)


def write_histograms(
    records: Iterable[Mapping[str, Any]],
    out_dir: str | Path,
    cleaning: CleaningConfig | None = None,
) -> list[str]:
    """Write the report PNGs (matplotlib Agg, no display needed).

    Args:
        records: Manifest records.
        out_dir: Folder to write :data:`HISTOGRAM_FILES` into.
        cleaning: Thresholds drawn as reference lines.

    Returns:
        The file names written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cleaning = cleaning or CleaningConfig()
    records = [r for r in records if r.get("class_name")]
    out_dir = Path(out_dir)
    written: list[str] = []

    def save(fig: Figure, name: str) -> None:
        from sammed3d.io import atomic_write  # mode from the umask, like every output

        FigureCanvasAgg(fig)
        atomic_write(
            out_dir / name, lambda tmp: fig.savefig(tmp, dpi=100, bbox_inches="tight"),
            suffix=".png",
        )  # fmt: skip
        written.append(name)

    def split(key: str, fn: Any) -> tuple[list[float], list[float]]:
        kept, dropped = [], []
        for r in records:
            value = r.get(key)
            if value is None or r.get("status") == "error":
                continue
            v = fn(value)
            if v is None or not math.isfinite(v):
                continue
            (kept if r.get("status") == "kept" else dropped).append(v)
        return kept, dropped

    def hist(name: str, key: str, fn: Any, xlabel: str, line: float | None) -> None:
        kept, dropped = split(key, fn)
        fig = Figure(figsize=(6, 4))
        ax = fig.add_subplot()
        values = kept + dropped
        bins = np.histogram_bin_edges(values, bins=30) if values else 10
        if kept:
            ax.hist(kept, bins=bins, alpha=0.7, label=f"kept ({len(kept)})")
        if dropped:
            ax.hist(dropped, bins=bins, alpha=0.7, label=f"dropped ({len(dropped)})")
        if line is not None and line > 0:
            ax.axvline(line, color="k", linestyle="--", linewidth=1, label="threshold")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("masks")
        if values:
            ax.legend()
        save(fig, name)

    hist(
        "report_volume.png",
        "volume_mm3",
        lambda v: math.log10(v) if v > 0 else None,
        "log10 mask volume (mm³)",
        math.log10(cleaning.min_volume_mm3) if cleaning.min_volume_mm3 > 0 else None,
    )
    hist(
        "report_extent.png",
        "bbox_mm",
        lambda v: float(min(v)) if v and min(v) > 0 else None,
        "smallest bounding-box side (mm)",
        cleaning.min_extent_mm,
    )
    hist(
        "report_components.png",
        "components",
        float,
        "connected components per mask (before keeping the largest)",
        cleaning.max_components + 0.5 if cleaning.max_components else None,
    )

    rules = Counter(r.get("rule") or "unknown" for r in records if r.get("status") != "kept")
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    if rules:
        names = sorted(rules)
        ax.barh(names, [rules[n] for n in names])
    ax.set_xlabel("dropped masks")
    ax.set_title("drop rules")
    save(fig, "report_rules.png")

    per_class: dict[str, Counter[str]] = defaultdict(Counter)
    for r in records:
        per_class[r["class_name"]][r.get("status", "error")] += 1
    top = sorted(per_class, key=lambda n: (-per_class[n]["kept"], n))[:40]
    fig = Figure(figsize=(7, max(3.0, 0.25 * len(top) + 1)))
    ax = fig.add_subplot()
    if top:
        y = np.arange(len(top))
        kept = [per_class[n]["kept"] for n in top]
        other = [per_class[n]["dropped"] + per_class[n]["error"] for n in top]
        ax.barh(y, kept, label="kept")
        ax.barh(y, other, left=kept, label="dropped/error")
        ax.set_yticks(y, top)
        ax.invert_yaxis()
        ax.legend()
    ax.set_xlabel("masks")
    ax.set_title("masks per category (top 40 by kept)")
    save(fig, "report_classes.png")
    return written
