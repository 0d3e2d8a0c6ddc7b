"""``sammed3d prepare``: build a cleaned per-class training set from datasets of any layout.

For every case of every source dataset (any layout of :mod:`sammed3d.data.layout`:
nnU-Net/MSD, per-class, TotalSegmentator, KiTS/LiTS/BraTS case folders, BIDS, a manifest):

1. **Integrity check** (:func:`~sammed3d.data.cleaning.check_integrity`): image/label
   geometry, NaNs, label values against the declared ones (``dataset.json``, the manifest's
   ``labels``, ...). A failing case is recorded in the manifest with the rule
   ``integrity:<what>`` and nothing of it is written (for one-mask-per-class layouts: if any
   of its masks fails).
2. **Resampling** to ``target_spacing`` (1.5 mm; image linear, label nearest, with
   :func:`sammed3d.data.transforms.resample`), cached under ``OUTPUT/.prepare/cache``.
3. **Cleaning** of each class (:func:`~sammed3d.data.cleaning.clean_mask`: the paper's four
   steps) on the resampled grid, under its canonical category
   (:mod:`sammed3d.data.categories`; an unmapped name keeps its own normalised name and is
   reported). The manifest keeps the source's name in ``source_class``.
4. **Writing** each kept mask in the published per-class layout (the one
   :func:`~sammed3d.data.layout.discover_dataset` and the trainer read)::

       OUTPUT/<class>/<modality>_<dataset>/imagesTr/<case>.nii.gz   (hard link to the cache)
       OUTPUT/<class>/<modality>_<dataset>/labelsTr/<case>.nii.gz   (binary uint8)

   (for multi-sequence cases such as BraTS the dataset name ends in the sequence:
   ``mr_BraTS2021_flair``).

plus ``manifest.jsonl`` (one line per case and output class, kept or dropped with the rule),
``catalogue.json`` (categories normalised across datasets), ``report.json`` and PNG
histograms (:mod:`sammed3d.data.curation_report`), and ``prepare.json`` (the settings).

Cases run in a process pool; a finished case leaves a marker in ``OUTPUT/.prepare/cases`` and
is skipped by the next run with the same settings (resumable). Sources are only read.
A case that raises is recorded with status ``"error"`` and retried by the next run. A case the
source lists but that cannot be paired (its label or image file is missing, a bad or duplicate
manifest row) is **skipped**: a warning names it and the file, the manifest records it with
status ``"skipped"`` and the layout problem as rule (``missing_file``, ...), ``report.json``
lists it under ``skipped``, and nothing of it is written. (``train``, ``evaluate`` and
``predict --data`` stop at such a case instead: they read a dataset as it is, while ``prepare``
curates it, and its output holds only the cases it could prepare.)

Example::

    >>> result = prepare_datasets(["nnUNet_raw/Dataset003_Liver"], "prepared", workers=4)
    >>> result.kept, result.dropped
    (243, 19)
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sammed3d.data.categories import catalogue_digest, resolve_category
from sammed3d.data.cleaning import (
    CleaningConfig,
    body_midline_x,
    check_integrity,
    clean_mask,
    paired_base,
)
from sammed3d.data.layout import Case, LayoutProblem, Split, discover_dataset_lenient
from sammed3d.io import atomic_write_text

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"
CATALOGUE_NAME = "catalogue.json"
REPORT_NAME = "report.json"
SETTINGS_NAME = "prepare.json"
STATE_DIR = ".prepare"
#: Bumped when the output format changes (invalidates resume markers).
FORMAT_VERSION = 2
#: How many skipped cases are named one by one in the log (all are in ``report.json``).
SKIPPED_SHOWN = 5

_SPLIT_SUFFIX = {"train": "Tr", "test": "Ts"}


@dataclass
class PrepareResult:
    """What a :func:`prepare_datasets` run produced.

    Attributes:
        output: The output folder.
        manifest: ``manifest.jsonl`` path.
        catalogue: ``catalogue.json`` path.
        report: ``report.json`` path.
        cases: Cases found in the sources: the ones prepared (resumed and failed included)
            and the skipped ones.
        cases_resumed: Cases not processed again because a previous run finished them.
        cases_failed: Cases that could not be prepared: status ``"error"`` (an unreadable
            file, a failed integrity check, a crash).
        cases_skipped: Cases the sources list but that cannot be paired (a missing image or
            label file, a bad or duplicate manifest row): status ``"skipped"``, nothing written.
        kept: Kept masks (manifest lines with status ``"kept"``).
        dropped: Dropped masks (status ``"dropped"``).
        unmapped: Source class names the category catalogue does not know (kept under their
            own normalised name; listed in ``report.json`` under ``unmapped_names``).
        records: All manifest records, in manifest order.
    """

    output: Path
    manifest: Path
    catalogue: Path
    report: Path
    cases: int = 0
    cases_resumed: int = 0
    cases_failed: int = 0
    cases_skipped: int = 0
    kept: int = 0
    dropped: int = 0
    unmapped: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)


@dataclass(frozen=True)
class _Job:
    """One case to process (picklable: sent to worker processes)."""

    case: Case
    source: str
    split: str
    output: str
    folder: str  # "<modality>_<dataset>"
    key: str  # unique file stem for markers/cache
    settings_hash: str
    cleaning: CleaningConfig
    target_spacing: tuple[float, float, float] | None
    protect: tuple[str, ...]


def prepare_datasets(
    sources: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    cleaning: CleaningConfig | None = None,
    target_spacing: Sequence[float] | None = (1.5, 1.5, 1.5),
    split: Split = "train",
    workers: int = 1,
    show_progress: bool = True,
    histograms: bool = True,
    layout: str | None = None,
) -> PrepareResult:
    """Clean one or more datasets into the per-class training layout.

    Args:
        sources: Dataset folders of any layout :func:`~sammed3d.data.layout.discover_dataset`
            reads (or folders holding such folders), or manifest ``.csv`` files.
        output: Output folder: new, empty, or written by an earlier run (then resumed).
        cleaning: Cleaning thresholds (paper defaults when ``None``).
        target_spacing: Output spacing in mm, or ``None`` to keep each case's spacing.
        split: Which split of each source to read (see :func:`discover_dataset`); ``"test"``
            is written to ``imagesTs``/``labelsTs``.
        workers: Worker processes (1 runs in this process).
        show_progress: Show a tqdm progress bar.
        histograms: Also write PNG histograms next to ``report.json``.
        layout: Force one layout for every source (a name of
            :data:`sammed3d.data.layout.LAYOUT_NAMES`) instead of detecting it.

    Returns:
        A :class:`PrepareResult` with paths and counts.

    Raises:
        FileNotFoundError: a source does not exist.
        ValueError: bad arguments, an unknown source layout, the output overlaps a source,
            the output folder holds unrelated files or another split of a source, or two
            cases would be written to the same output file (same class,
            ``<modality>_<dataset>`` folder and case id).
    """
    from tqdm.auto import tqdm

    cleaning = cleaning or CleaningConfig()
    if not sources:
        raise ValueError("give at least one source dataset folder")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if split not in ("train", "test", "auto"):
        raise ValueError(f"split must be 'train', 'test' or 'auto', got {split!r}")
    spacing = _check_spacing(target_spacing)
    out = Path(output).resolve()
    src_paths = [Path(s) for s in sources]
    for src in src_paths:
        if not src.exists():
            raise FileNotFoundError(f"source dataset not found: {src}")
    _check_no_overlap(src_paths, out)
    _check_output_folder(out)
    _check_same_split(out, src_paths, split)

    jobs, skipped = _plan_jobs(src_paths, out, split, cleaning, spacing, layout)
    _log_plan(len(jobs), skipped, len(src_paths))
    settings = _settings(src_paths, cleaning, spacing, split, layout)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / SETTINGS_NAME, json.dumps(settings, indent=2) + "\n")

    results: dict[int, tuple[list[dict[str, Any]], bool]] = {}
    bar = tqdm(total=len(jobs), desc="prepare", unit="case", disable=not show_progress)
    try:
        todo: list[int] = []
        for i, job in enumerate(jobs):  # finished cases are skipped without a worker
            done = _finished_records(job)
            if done is None:
                _discard_previous(job)  # here, not in workers: no rmdir races
                todo.append(i)
            else:
                results[i] = (done, True)
                bar.update()
        if workers == 1 or len(todo) <= 1:
            for i in todo:
                results[i] = process_case(jobs[i])
                bar.update()
        else:
            # spawn: no fork of a process that may hold threads (SimpleITK, torch).
            ctx = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(
                max_workers=min(workers, len(todo)), mp_context=ctx, initializer=_init_worker
            ) as pool:
                futures = {pool.submit(process_case, jobs[i]): i for i in todo}
                for fut in cf.as_completed(futures):
                    i = futures[fut]
                    try:
                        results[i] = fut.result()
                    except Exception as exc:  # a worker died (e.g. killed for memory)
                        results[i] = (_error_records(jobs[i], exc), False)
                    bar.update()
    finally:
        bar.close()

    records: list[dict[str, Any]] = []
    resumed = failed = 0
    for i in range(len(jobs)):
        recs, was_resumed = results[i]
        resumed += was_resumed
        failed += any(r["status"] == "error" for r in recs)  # one case, however many classes
        records += recs
    records += skipped

    result = PrepareResult(
        output=out,
        manifest=out / MANIFEST_NAME,
        catalogue=out / CATALOGUE_NAME,
        report=out / REPORT_NAME,
        cases=len(jobs) + len(skipped),
        cases_resumed=resumed,
        cases_failed=failed,
        cases_skipped=len(skipped),
        kept=sum(r["status"] == "kept" for r in records),
        dropped=sum(r["status"] == "dropped" for r in records),
        unmapped=sorted(
            {str(r["source_class"]) for r in records if r.get("category_mapped") is False}
        ),
        records=records,
    )
    atomic_write_text(
        result.manifest, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    )
    from sammed3d.data.curation_report import build_catalogue, build_report, write_histograms

    catalogue = build_catalogue(records)
    atomic_write_text(result.catalogue, json.dumps(catalogue, indent=2) + "\n")
    report = build_report(records, settings)
    if histograms:
        report["histograms"] = write_histograms(records, out, cleaning)
    atomic_write_text(result.report, json.dumps(report, indent=2) + "\n")
    _warn_stale_markers(out, jobs)
    if result.unmapped:
        logger.warning(
            "note: %d class name(s) not in the category catalogue, kept as written: %s; "
            "see 'unmapped_names' in %s",
            len(result.unmapped),
            ", ".join(result.unmapped[:10]) + (" ..." if len(result.unmapped) > 10 else ""),
            result.report,
        )
    # debug: ``sammed3d prepare`` prints this summary itself (said once)
    logger.debug(
        "prepared %d of %d case(s) (%d resumed, %d failed; %d skipped): %d mask(s) kept, "
        "%d dropped -> %s",
        result.cases - result.cases_skipped,
        result.cases,
        result.cases_resumed,
        result.cases_failed,
        result.cases_skipped,
        result.kept,
        result.dropped,
        out,
    )
    return result


def read_manifest(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a ``manifest.jsonl`` (a file or the output folder that holds it)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no manifest at {path}")
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not valid JSON: {exc}") from None
    return records


# ---------------------------------------------------------------------------------------------
# one case (runs in a worker)


def process_case(job: _Job) -> tuple[list[dict[str, Any]], bool]:
    """Process one case, or reuse the marker of a finished identical run.

    Returns:
        ``(records, resumed)``.
    """
    out = Path(job.output)
    marker = _marker_path(out, job)
    done = _finished_records(job)
    if done is not None:
        return done, True
    _discard_previous(job)
    sources = _source_identities(job.case)

    t0 = time.perf_counter()
    base = _base_record(job)
    outputs: list[str] = []
    try:
        records = _clean_case(job, base, outputs)
    except Exception as exc:  # recorded in the manifest; the run goes on
        _remove_outputs(out, outputs, prune=False)  # no half-written case is left behind
        logger.warning("case %s/%s failed: %s", job.case.dataset, job.case.case_id, exc)
        logger.debug("traceback", exc_info=True)
        return _error_records(job, exc), False
    atomic_write_text(
        marker,
        json.dumps(
            {
                "settings_hash": job.settings_hash,
                "sources": sources,
                "outputs": outputs,
                "records": records,
            },
            sort_keys=True,
        ),
    )
    logger.debug(
        "%s/%s done in %.2fs", job.case.dataset, job.case.case_id, time.perf_counter() - t0
    )
    return records, False


def _discard_previous(job: _Job) -> None:
    """Remove the outputs and marker of a stale earlier run of this case (other settings)."""
    out = Path(job.output)
    marker = _marker_path(out, job)
    previous = _read_json(marker)
    if isinstance(previous, dict):
        _remove_outputs(out, previous.get("outputs", []))
    marker.unlink(missing_ok=True)


def _finished_records(job: _Job) -> list[dict[str, Any]] | None:
    """The records of a previous run of this case with the same settings and sources."""
    out = Path(job.output)
    previous = _read_json(_marker_path(out, job))
    if not isinstance(previous, dict):
        return None
    sources = _source_identities(job.case)
    if (
        previous.get("settings_hash") == job.settings_hash
        and previous.get("sources") == sources
        and all((out / p).is_file() for p in previous.get("outputs", []))
    ):
        return previous["records"]
    return None


def _clean_case(job: _Job, base: dict[str, Any], outputs: list[str]) -> list[dict[str, Any]]:
    """Integrity check, resample, clean and write one case.

    Returns the manifest records; the files written are appended to ``outputs`` as they are
    written (relative to the output folder). A case whose label file (or one of whose mask
    files) fails the integrity check writes nothing: files already written for it are removed.
    """
    from sammed3d.io import Volume, read_volume, write_volume

    case, out = job.case, Path(job.output)
    image = read_volume(case.image)
    base["source_spacing"] = [round(s, 5) for s in image.spacing]
    base["source_shape"] = list(image.shape)
    groups = case.label_groups()

    suffix = _SPLIT_SUFFIX[job.split]
    records: list[dict[str, Any]] = []
    written: set[str] = set()
    cached_image = _cache_dir(out, job) / f"{job.key}_image.nii.gz"
    image_r: Any = None
    midline = 0.0
    for index, (path, classes) in enumerate(groups):
        label = read_volume(path)
        problems = check_integrity(image, label, classes.values())
        if problems:
            _remove_outputs(out, outputs, prune=False)
            outputs.clear()
            message = "; ".join(p.message for p in problems)
            if case.masks:
                message = f"{path.name}: {message}"
            return [
                {
                    **base,
                    **_category_fields(name),
                    "label_value": value,
                    "status": "error",
                    "rule": problems[0].rule,
                    "message": message,
                }
                for name, value in _sorted_labels(case)
            ]
        label = label.with_array(_as_int_labels(label.array))
        if image_r is None:
            image_r = _resampled_image(job, image)
            midline = body_midline_x(image_r)
        label_r = _resampled_label(job, index, path, label)
        base["spacing"] = [round(s, 5) for s in label_r.spacing]
        base["shape"] = list(label_r.shape)
        affine = label_r.affine
        for name, value in classes.items():
            fields = _category_fields(name)
            results = clean_mask(
                label_r.array == value,
                affine,
                fields["class_name"],
                job.cleaning,
                midline_x=midline,
            )
            for res in results:
                rec = {**base, "label_value": value, **res.to_record(), **fields}
                rec["class_name"] = res.class_name  # the side, after a step-4 split
                if res.kept and res.class_name in written:
                    rec.update(
                        status="dropped",
                        rule="duplicate_class",
                        message=f"another class of this case was already written as "
                        f"{res.class_name!r}",
                    )
                elif res.kept:
                    assert res.mask is not None
                    folder = out / res.class_name / job.folder
                    lab_path = folder / f"labels{suffix}" / f"{case.case_id}.nii.gz"
                    img_path = folder / f"images{suffix}" / f"{case.case_id}.nii.gz"
                    outputs += [_rel(img_path, out), _rel(lab_path, out)]
                    write_volume(
                        Volume(
                            res.mask.astype(np.uint8),
                            label_r.spacing,
                            label_r.origin,
                            label_r.direction,
                        ),
                        lab_path,
                        protect=job.protect,
                    )
                    _link_or_copy(cached_image, img_path)
                    written.add(res.class_name)
                    rec["image_out"], rec["label_out"] = outputs[-2], outputs[-1]
                records.append(rec)
    return records


def _resampled_image(job: _Job, image: Any) -> Any:
    """The image on the target grid, cached under ``.prepare/cache`` (the file outputs link to)."""
    from sammed3d.io import read_volume, write_volume

    cache = _cache_dir(Path(job.output), job)
    image_file = cache / f"{job.key}_image.nii.gz"
    info_file = cache / f"{job.key}_image.json"
    ident = {
        "image": _file_identity(job.case.image),
        "spacing": list(job.target_spacing) if job.target_spacing else None,
    }
    if _read_json(info_file) == ident and image_file.is_file():
        return read_volume(image_file)
    spacing = job.target_spacing
    image_r = image
    if spacing is not None and not np.allclose(image.spacing, spacing, rtol=1e-4, atol=0):
        from sammed3d.data.transforms import resample

        image_r = resample(image, spacing, interpolation="linear")
    image_r = image_r.with_array(_compact_image(image_r.array))
    write_volume(image_r, image_file, protect=job.protect)
    atomic_write_text(info_file, json.dumps(ident, sort_keys=True))
    return image_r


def _resampled_label(job: _Job, index: int, path: Path, label: Any) -> Any:
    """Label file number ``index`` of the case on the target grid (nearest), cached."""
    from sammed3d.io import read_volume, write_volume

    cache = _cache_dir(Path(job.output), job)
    label_file = cache / f"{job.key}_label{index}.nii.gz"
    info_file = cache / f"{job.key}_label{index}.json"
    ident = {
        "label": _file_identity(path),
        "spacing": list(job.target_spacing) if job.target_spacing else None,
    }
    if _read_json(info_file) == ident and label_file.is_file():
        return read_volume(label_file)
    spacing = job.target_spacing
    label_r = label
    if spacing is not None and not np.allclose(label.spacing, spacing, rtol=1e-4, atol=0):
        from sammed3d.data.transforms import resample

        label_r = resample(label, spacing, interpolation="nearest")
    write_volume(label_r, label_file, protect=job.protect)
    atomic_write_text(info_file, json.dumps(ident, sort_keys=True))
    return label_r


# ---------------------------------------------------------------------------------------------
# planning


def _plan_jobs(
    sources: list[Path],
    out: Path,
    split: Split,
    cleaning: CleaningConfig,
    spacing: tuple[float, float, float] | None,
    layout: str | None = None,
) -> tuple[list[_Job], list[dict[str, Any]]]:
    """The cases to prepare, and the manifest records of the cases the sources list but that
    cannot be paired (status ``"skipped"``, one per :class:`LayoutProblem`)."""
    settings_hash = _hash(_settings(sources, cleaning, spacing, split, layout))
    jobs: list[_Job] = []
    skipped: list[dict[str, Any]] = []
    owner: dict[tuple[str, str, str, str], tuple[Path, Path]] = {}  # output -> (image, label)
    seen_sources: dict[Path, Path] = {}
    for src in sources:
        if src.resolve() in seen_sources:
            raise ValueError(f"source {src} is given twice")
        seen_sources[src.resolve()] = src
        cases, missing = discover_dataset_lenient(src, split, layout)
        for case in cases:
            folder = f"{case.modality.lower()}_{case.dataset}"
            suffix = _SPLIT_SUFFIX[case.split]
            for name in _planned_classes(case, cleaning):
                target = (name, folder, suffix, case.case_id)
                other = owner.setdefault(target, (case.image, case.label))
                if other != (case.image, case.label):
                    raise ValueError(
                        f"{other[1]} and {case.label} would both be written to "
                        f"{name}/{folder}/labels{suffix}/{case.case_id}.nii.gz; rename one "
                        "dataset folder (or class) so the outputs do not collide"
                    )
            label_files = [str(p) for p, _ in case.label_groups()]
            jobs.append(
                _Job(
                    case=case,
                    source=str(src),
                    split=case.split,
                    output=str(out),
                    folder=folder,
                    key=_case_key(case),
                    settings_hash=settings_hash,
                    cleaning=cleaning,
                    target_spacing=spacing,
                    protect=(str(case.image), str(case.label), *label_files),
                )
            )
        skipped += [_skipped_record(src, p) for p in missing]
    return jobs, skipped


def _skipped_record(source: Path, problem: LayoutProblem) -> dict[str, Any]:
    """The manifest record of a case that cannot be paired: nothing of it is prepared."""
    return {
        "source": str(source),
        "dataset": problem.dataset,
        "case": problem.case_id,
        "modality": None,
        "class_name": None,
        "source_class": None,
        "status": "skipped",
        "rule": problem.rule,
        "message": problem.message,
        "file": str(problem.path),
        "image": None,
        "label": None,
    }


def _log_plan(n_jobs: int, skipped: list[dict[str, Any]], n_sources: int) -> None:
    """Say how many cases will be prepared, and name the skipped ones (a warning each)."""
    if not skipped:
        logger.info("%d case(s) to prepare from %d source(s)", n_jobs, n_sources)
        return
    logger.info(
        "%d case(s) found in %d source(s): %d to prepare, %d skipped",
        n_jobs + len(skipped),
        n_sources,
        n_jobs,
        len(skipped),
    )
    for r in skipped[:SKIPPED_SHOWN]:
        logger.warning("warning: skipped case %s/%s: %s", r["dataset"], r["case"], r["message"])
    if len(skipped) > SKIPPED_SHOWN:
        logger.warning(
            "warning: and %d more skipped case(s); all are listed under 'skipped' in %s",
            len(skipped) - SKIPPED_SHOWN,
            REPORT_NAME,
        )


def _planned_classes(case: Case, cleaning: CleaningConfig) -> set[str]:
    """Output class names a case can produce (both sides for paired structures)."""
    names: set[str] = set()
    for raw in case.labels:
        name = _category_fields(raw)["class_name"]
        base = paired_base(name, cleaning.paired_classes) if cleaning.split_paired else None
        names.update((f"{base}_left", f"{base}_right") if base else (name,))
    return names


def _settings(
    sources: list[Path],
    cleaning: CleaningConfig,
    spacing: tuple[float, float, float] | None,
    split: str,
    layout: str | None = None,
) -> dict[str, Any]:
    from sammed3d import __version__

    return {
        "format_version": FORMAT_VERSION,
        "sammed3d": __version__,
        "sources": [str(s.resolve()) for s in sources],
        "layout": layout,
        "split": split,
        "target_spacing": list(spacing) if spacing else None,
        "cleaning": cleaning.to_dict(),
        "catalogue": catalogue_digest(),
    }


def _hash(settings: dict[str, Any]) -> str:
    """Hash of what the outputs of a case depend on (not where the sources were found)."""
    ignored = ("sources", "sammed3d", "layout")
    relevant = {k: v for k, v in settings.items() if k not in ignored}
    return hashlib.sha1(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def _case_key(case: Case) -> str:
    ident = str(case.label.resolve())
    if case.sequence:  # the images of one multi-sequence case share the label
        ident += f"\n{case.image.resolve()}"
    digest = hashlib.sha1(ident.encode()).hexdigest()[:10]
    return f"{case.case_id}-{digest}"


def _check_spacing(spacing: Sequence[float] | None) -> tuple[float, float, float] | None:
    if spacing is None:
        return None
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise ValueError(f"target spacing must be three numbers in mm, got {spacing!r}") from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"target spacing must be 1 or 3 positive numbers, got {spacing!r}")
    return values  # type: ignore[return-value]


def _check_no_overlap(sources: list[Path], out: Path) -> None:
    for src in sources:
        s = src.resolve()
        if s == out or s in out.parents or out in s.parents:
            raise ValueError(
                f"output folder {out} overlaps the source {src}; choose an output folder "
                "outside every source (sources are never modified)"
            )


def _check_output_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / SETTINGS_NAME).is_file():
        raise ValueError(
            f"output folder {out} is not empty and was not written by 'sammed3d prepare' "
            f"(no {SETTINGS_NAME}); use a new or empty folder"
        )


def _check_same_split(out: Path, sources: list[Path], split: str) -> None:
    """Refuse to prepare another split of a source into a folder that holds one split of it:
    the manifest, report and settings describe one run, so the earlier split's cases would
    drop out of them (their files staying behind, unlisted)."""
    path = out / SETTINGS_NAME
    if not path.is_file():
        return
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # unreadable settings: the run rewrites them (as before)
    old = before.get("split") if isinstance(before, dict) else None
    shared = set(before.get("sources") or []) & {str(s.resolve()) for s in sources}
    if shared and old is not None and old != split:
        raise ValueError(
            f"{out} holds the {old!r} split of {sorted(shared)[0]}; preparing the {split!r} "
            "split into it would drop those cases from its manifest: use another --output "
            "(one folder per split)"
        )


# ---------------------------------------------------------------------------------------------
# helpers


def _init_worker() -> None:
    """One thread per worker process (the pool provides the parallelism)."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _base_record(job: _Job) -> dict[str, Any]:
    c = job.case
    record: dict[str, Any] = {
        "source": job.source,
        "dataset": c.dataset,
        "case": c.case_id,
        "modality": c.modality,
        "split": job.split,
        "image": str(c.image),
        "label": str(c.label),
    }
    if c.sequence:
        record["sequence"] = c.sequence
    return record


def _error_records(job: _Job, exc: BaseException) -> list[dict[str, Any]]:
    base = _base_record(job)
    message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
    return [
        {
            **base,
            **_category_fields(name),
            "label_value": value,
            "status": "error",
            "rule": "error",
            "message": message,
        }
        for name, value in _sorted_labels(job.case)
    ]


def _sorted_labels(case: Case) -> list[tuple[str, int]]:
    return sorted(case.labels.items(), key=lambda kv: (kv[1], kv[0]))


def _category_fields(name: str) -> dict[str, Any]:
    """``class_name`` (canonical category, or the normalised source name when the catalogue
    does not know it), ``source_class`` (as written) and ``category_mapped``."""
    try:
        category, mapped = resolve_category(name)
    except ValueError:  # no letters or digits: kept as written
        category, mapped = name, False
    return {"class_name": category, "source_class": name, "category_mapped": mapped}


def _source_identities(case: Case) -> list[list[Any] | None]:
    """Identity of every source file of a case (image, then each label file)."""
    return [_file_identity(case.image)] + [_file_identity(p) for p, _ in case.label_groups()]


def _as_int_labels(array: np.ndarray) -> np.ndarray:
    """Integer label array of the smallest sufficient dtype (values checked beforehand)."""
    top = int(array.max()) if array.size else 0
    dtype = np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int32
    return array.astype(dtype, copy=False)


def _compact_image(array: np.ndarray) -> np.ndarray:
    """float32 for float images (halves float64 files); integer images keep their type."""
    if np.issubdtype(array.dtype, np.floating) and array.dtype != np.float32:
        return array.astype(np.float32)
    return array


def _cache_dir(out: Path, job: _Job) -> Path:
    tag = "native" if job.target_spacing is None else "x".join(f"{s:g}" for s in job.target_spacing)
    return out / STATE_DIR / "cache" / tag / job.folder


def _marker_path(out: Path, job: _Job) -> Path:
    return out / STATE_DIR / "cases" / job.folder / f"{job.key}.json"


def _file_identity(path: Path) -> list[Any] | None:
    """(path, size, mtime) of a source file; None when it cannot be read."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (copy across file systems), replacing ``dst`` atomically.

    Not :func:`sammed3d.io.atomic_write`: a hard link shares the source's inode, so neither
    the umask mode nor an fsync may be applied (they would change the user's input file)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _remove_outputs(out: Path, rel_paths: list[str], *, prune: bool = True) -> None:
    """Delete files a run wrote (only inside ``out``); ``prune`` also drops empty folders.

    Workers never prune: another worker may be about to write into such a folder.
    """
    for rel in rel_paths:
        path = (out / rel).resolve()
        if out in path.parents and path.is_file():
            path.unlink()
            for parent in (
                path.parents if prune else ()
            ):  # prune folders left empty (class/dataset/split)
                if parent == out or out not in parent.parents:
                    break
                try:
                    parent.rmdir()
                except OSError:
                    break


def _rel(path: Path, out: Path) -> str:
    return path.relative_to(out).as_posix()


def _warn_stale_markers(out: Path, jobs: list[_Job]) -> None:
    current = {_marker_path(out, j) for j in jobs}
    stale = [p for p in (out / STATE_DIR / "cases").glob("*/*.json") if p not in current]
    if stale:
        logger.warning(
            "%s holds %d finished case(s) from sources not in this run; their files are still "
            "in the output folder but not in the manifest (e.g. %s)",
            out,
            len(stale),
            stale[0].name,
        )
