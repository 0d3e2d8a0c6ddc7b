"""Score a task model on a labelled dataset: Dice and NSD per class, CSV + JSON + plot.

For every scan of the dataset (any layout: one label map per case, or one mask file per class
as TotalSegmentator and the per-class folders ``sammed3d prepare`` writes, whose class folders
of one scan are merged by :func:`sammed3d.data.layout.one_case_per_image`, so each image is
predicted once; ``split="auto"``: the held-out split when it is labelled) the model predicts
the whole volume (:class:`~sammed3d.task.predictor.TaskPredictor`), the ground truth is mapped
to the model's labels by class **name** (``dataset.json`` values may differ from the model's),
and the
project's metrics (:func:`sammed3d.evaluation.metrics.label_map_metrics`: Dice, NSD at
``tolerance_mm``) are computed per class on the input grid. A model class the dataset does
not declare is not scored (a warning names it). A case is scored for a class when it has that
class's ground truth: a label map scores every class its dataset declares, present or not
(Dice 0 for any false positive; NaN, left out of the means, when both are empty); a scan of a
per-class layout without a mask file for the class is *not* scored for it (``prepare`` may
have dropped the mask of a structure that is in the image; a warning counts such cases).

Outputs in ``out_dir``: ``per_case.csv`` (one row per case and class), ``summary.json``
(mean ± std per class, the mean over classes, the checkpoint's classes and encoder origin,
``classes_not_scored``: model class -> why, ``cases_without_mask``: per scored class, the
cases not scored for it because they have no mask file for it; both also logged as warnings),
``dice_per_class.png`` and, with ``write_predictions``, ``predictions/<dataset>__<case>.nii.gz``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sammed3d._wording import with_cli_wording
from sammed3d.task.predictor import TaskPredictor

logger = logging.getLogger(__name__)

CSV_FIELDS = ("dataset", "case", "class", "label", "dice", "nsd", "gt_voxels", "pred_voxels")
OUTPUT_FILES = ("per_case.csv", "summary.json", "dice_per_class.png")


def check_output_dir(out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Refuse an output folder that already holds results (unless ``overwrite``), or one that
    cannot be written. Creates nothing.

    Raises:
        FileExistsError / NotADirectoryError / PermissionError: as the messages say.
    """
    from sammed3d.io import check_writable_folder

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output {out} is a file; give a folder")
    found = [name for name in OUTPUT_FILES if (out / name).exists()]
    if found and not overwrite:
        held = f"{out} already holds results ({found[0]})"
        raise with_cli_wording(
            FileExistsError(f"{held}; pass overwrite=True to replace them"),
            f"{held}; pass --overwrite to replace them",
        )
    check_writable_folder(out)
    return out


def evaluate_task(
    predictor: TaskPredictor,
    data: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    split: str = "auto",
    tolerance_mm: float = 1.0,
    write_predictions: bool = True,
    overwrite: bool = False,
    checkpoint: str | None = None,
) -> dict[str, Any]:
    """Predict and score every case of ``data``; write the outputs; return the summary.

    Raises:
        FileNotFoundError / ValueError: dataset discovery problems; ``out_dir`` is the dataset
            folder or one that holds its images or labels
            (:func:`~sammed3d.data.layout.check_results_folder`); a dataset that declares
            none of the model's classes; a label value the dataset does not declare (one line,
            naming the file; every label file is checked before the first prediction). A case
            whose label map (or a mask file) is on another grid than its image is skipped with
            a warning and listed in the summary's ``skipped``.
        FileExistsError: results in ``out_dir`` without ``overwrite``.
    """
    from sammed3d.data.layout import check_results_folder, discover_dataset, one_case_per_image
    from sammed3d.evaluation.metrics import check_same_grid, label_map_metrics
    from sammed3d.inference.validation import load_image
    from sammed3d.io import VolumeError, atomic_write_text, write_volume
    from sammed3d.task.labels import check_declared_values, class_label_map

    out = check_output_dir(out_dir, overwrite=overwrite)
    if not (math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise ValueError(f"tolerance_mm must be a finite number >= 0, got {tolerance_mm}")
    cases = one_case_per_image(discover_dataset(data, split=split))  # type: ignore[arg-type]
    check_results_folder(out, cases, root=data)  # not among the images and labels it scores
    classes = predictor.classes
    if not any(name in c.labels for c in cases for name in classes):
        declared = sorted({n for c in cases for n in c.labels})
        raise ValueError(
            f"{data} declares none of the model's classes {list(classes)} (it declares {declared})"
        )
    for case in cases:  # every ground truth is checked before the first prediction
        check_declared_values(case)
    not_scored, without_mask = unscored_classes(cases, classes)
    for name, reason in not_scored.items():
        logger.warning("warning: model class %r is not scored: %s", name, reason)
    for name, n in without_mask.items():
        if n:
            logger.warning(
                "warning: class %r is not scored in %d of %d cases: they have no mask file "
                "(or no declaration) for it; a case is scored for a class only when it has "
                "its ground truth (prepare may have dropped a mask of a structure that is "
                "there: see its manifest.jsonl)",
                name, n, len(cases),
            )  # fmt: skip
    rows: list[dict[str, Any]] = []
    seconds: list[float] = []
    skipped: list[dict[str, str]] = []
    for n, case in enumerate(cases, start=1):
        scored = [(i + 1, name) for i, name in enumerate(classes) if name in case.labels]
        image = load_image(case.image)
        try:  # a label map on another grid cannot score this case (as evaluate skips it)
            gt = class_label_map(case, {name: label for label, name in scored})
            check_same_grid(image, gt, names=("image", "label map"))
        except VolumeError as exc:
            reason = str(exc)
            logger.warning(
                "case %d/%d %s skipped: %s and %s are on different grids (%s)",
                n, len(cases), case.case_id, case.image, gt_name(case), reason,
            )  # fmt: skip
            skipped.append({"case": case.case_id, "label": gt_name(case), "reason": reason})
            continue
        modality = case.modality if case.modality not in ("unknown", "") else None
        t0 = time.perf_counter()
        pred = predictor.predict(image, modality=modality)
        seconds.append(time.perf_counter() - t0)
        metrics = label_map_metrics(
            pred,
            gt,
            tolerance_mm=tolerance_mm,
            labels=[label for label, _ in scored],
            metrics=("dice", "nsd"),
        )
        for out_label, name in scored:
            row = metrics[out_label]
            rows.append(
                {
                    "dataset": case.dataset,
                    "case": case.case_id,
                    "class": name,
                    "label": out_label,
                    **row,
                }
            )
        if write_predictions:
            write_volume(pred, out / "predictions" / f"{case.dataset}__{case.case_id}.nii.gz")
        shown = ", ".join(f"{name} {metrics[label]['dice']:.3f}" for label, name in scored)
        logger.info(
            "case %d/%d %s: Dice %s (%.1f s)", n, len(cases), case.case_id, shown, seconds[-1]
        )
    summary = summarize_rows(rows, classes)
    summary.update(
        checkpoint=checkpoint,
        data=str(data),
        split=split,
        splits_read=sorted({c.split for c in cases}),  # what "auto" resolved to
        tolerance_mm=tolerance_mm,
        cases=len(cases) - len(skipped),
        skipped=skipped,
        classes_not_scored=not_scored,
        cases_without_mask=without_mask,
        seconds_per_case=float(np.mean(seconds)) if seconds else None,
        encoder_origin=dict(predictor.spec.encoder_origin),
        encoder=predictor.spec.encoder_name,
    )
    from sammed3d.evaluation.metrics import json_safe
    from sammed3d.evaluation.reports import format_rows

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "per_case.csv", format_rows(rows, CSV_FIELDS, header=True))
    import json

    atomic_write_text(out / "summary.json", json.dumps(json_safe(summary), indent=2) + "\n")
    plot_per_class(summary, out / "dice_per_class.png", title=checkpoint or "")
    return summary


def unscored_classes(
    cases: Sequence[Any], classes: Sequence[str]
) -> tuple[dict[str, str], dict[str, int]]:
    """What of the model's ``classes`` goes unscored in ``cases``.

    Returns:
        ``(not_scored, without_mask)``: the model classes no case declares (name -> why, in
        words), and for every other model class the number of cases without its ground
        truth (per-class layouts: no mask file for the class in that scan; a label map
        declares every class of its dataset, so 0 there).
    """
    declared = sorted({n for c in cases for n in c.labels})
    not_scored = {
        name: f"the dataset declares no class of this name (it declares {declared}; "
        "classes are matched by name)"
        for name in classes
        if name not in declared
    }
    without_mask = {
        name: sum(1 for c in cases if name not in c.labels)
        for name in classes
        if name not in not_scored
    }
    return not_scored, without_mask


def gt_name(case: Any) -> str:
    """The ground truth of ``case`` as messages name it: its label map, or its mask files'
    folders (one per class)."""
    if not case.masks:
        return str(case.label)
    folders = sorted({str(Path(p).parent) for p in case.masks.values()})
    return folders[0] if len(folders) == 1 else f"{folders[0]} (and {len(folders) - 1} more)"


def summarize_rows(rows: Sequence[Mapping[str, Any]], classes: Sequence[str]) -> dict[str, Any]:
    """Mean ± std of Dice and NSD per class, and the mean of the class means."""
    from sammed3d.evaluation.metrics import summarize

    per_class: dict[str, Any] = {}
    for name in classes:
        mine = [r for r in rows if r["class"] == name]
        per_class[name] = {m: summarize(float(r[m]) for r in mine) for m in ("dice", "nsd")}
    means = {}
    for m in ("dice", "nsd"):
        values = [v[m]["mean"] for v in per_class.values() if v[m]["mean"] is not None]
        means[f"mean_{m}"] = float(np.mean(values)) if values else None
    return {"classes": list(classes), "per_class": per_class, **means}


def plot_per_class(
    summary: Mapping[str, Any], path: str | os.PathLike[str], *, title: str = ""
) -> Path:
    """Bar chart of mean Dice and NSD per class (± std)."""
    from matplotlib.figure import Figure

    from sammed3d.io import atomic_write

    names = list(summary["classes"])
    x = np.arange(len(names))
    fig = Figure(figsize=(max(5.0, 0.9 * len(names) + 2), 4), dpi=120)
    ax = fig.add_subplot()
    for offset, metric in ((-0.2, "dice"), (0.2, "nsd")):
        stats = [summary["per_class"][n][metric] for n in names]
        mean = [s["mean"] if s["mean"] is not None else np.nan for s in stats]
        std = [s["std"] if s["std"] is not None else 0.0 for s in stats]
        ax.bar(x + offset, mean, width=0.4, yerr=std, capsize=3, label=metric.upper())
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "task model", fontsize=9)
    fig.tight_layout()
    return atomic_write(path, fig.savefig, suffix=".png")


__all__ = ["CSV_FIELDS", "check_output_dir", "evaluate_task", "plot_per_class", "summarize_rows"]
