"""A CSV manifest, for every dataset no other reader knows::

    image,label,modality,labels
    img/case1.nii.gz,seg/case1.nii.gz,CT,1=liver;2=liver tumor
    img/case2.nii.gz,seg/case2.nii.gz,MR,"{""1"": ""liver""}"
    img/case3.nii.gz,seg/case3.nii.gz,CT,names/case3.json

The source is the ``.csv`` file itself, or a folder holding ``manifest.csv``. Relative paths
resolve against the manifest's folder.

Required columns: ``image``, ``label``, ``modality`` (``CT``, ``MR``, ``T1``, ``US``, ...,
``unknown``) and ``labels``: the names of the label values, as ``value=name`` pairs separated
by ``;``, as a JSON object (``{"1": "liver"}`` or ``{"liver": 1}``), or as the path of a
``.json`` file holding such an object (one per row). Optional columns: ``case`` (default: the
image file name without its ending), ``dataset`` (default: the manifest's folder name; in
both, characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_``),
``split`` (``train``/``test``, default ``train``) and ``sequence`` (appended to the dataset
name: ``study_flair``).

A bad row (missing file, unreadable names, unknown modality, a duplicate of an earlier row)
is a :class:`~sammed3d.data.layouts.base.LayoutProblem` naming the line; the other rows go on.
A missing column or an unreadable file is a ``ValueError``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from sammed3d.data.dataset_json import normalise_modality, parse_label_map
from sammed3d.data.layouts.base import (
    Case,
    Discovery,
    LayoutProblem,
    LayoutReader,
    Split,
    safe_name,
    sequence_dataset,
    strip_ending,
    wanted_split,
)

MANIFEST_NAME = "manifest.csv"
REQUIRED = ("image", "label", "modality", "labels")
OPTIONAL = ("case", "dataset", "split", "sequence")


def manifest_file(root: Path) -> Path | None:
    """The manifest a source names: the ``.csv`` itself or ``<folder>/manifest.csv``."""
    if root.is_file() and root.suffix.lower() == ".csv":
        return root
    if root.is_dir() and (root / MANIFEST_NAME).is_file():
        return root / MANIFEST_NAME
    return None


def detect(root: Path) -> bool:
    return manifest_file(root) is not None


def discover(root: Path, split: Split) -> Discovery:
    path = manifest_file(root)
    if path is None:
        raise FileNotFoundError(f"no manifest: expected a .csv file or {root / MANIFEST_NAME}")
    rows = read_rows(path)
    base = path.parent
    default_dataset = safe_name(base.name)
    has_test = any(r.get("split", "").strip().lower() == "test" for _, r in rows)
    want = wanted_split(split, has_test)

    cases: list[Case] = []
    problems: list[LayoutProblem] = []
    seen_files: dict[tuple[Path, Path], int] = {}
    seen_ids: dict[tuple[str, str], int] = {}
    for line, row in rows:
        image = _resolve(base, row["image"])
        label = _resolve(base, row["label"])
        # Case and dataset names become output file and folder names: made file-name safe.
        case_id = safe_name(row.get("case") or strip_ending(image.name) or f"line{line}")
        sequence = safe_name(row["sequence"]) if row.get("sequence") else None
        dataset = sequence_dataset(safe_name(row.get("dataset") or default_dataset), sequence)
        try:
            row_split = (row.get("split") or "train").lower()
            if row_split not in ("train", "test"):
                raise _RowError(f"split {row['split']!r} is not train or test")
            if row_split != want:
                continue
            if not row["image"] or not row["label"]:
                raise _RowError("image and label must not be empty")
            ident = (dataset, case_id)
            if (image, label) in seen_files:
                raise _RowError(
                    f"duplicate of line {seen_files[image, label]} (same image and label)",
                    rule="duplicate_row",
                )
            if ident in seen_ids:
                raise _RowError(
                    f"duplicate of line {seen_ids[ident]} (same dataset {dataset!r} and case "
                    f"{case_id!r}; give each row its own case id)",
                    rule="duplicate_row",
                )
            for kind, file in (("image", image), ("label", label)):
                if not file.exists():
                    raise _RowError(f"{kind} not found: {file}", file, "missing_file")
            modality = normalise_modality(row["modality"])
            if modality == "unknown" and row["modality"].lower() != "unknown":
                raise _RowError(
                    f"modality {row['modality']!r} is not known (CT, MR, T1, T2, FLAIR, US, "
                    "PET, ... or unknown)"
                )
            try:
                names = parse_label_names(row["labels"], base)
            except (ValueError, OSError) as exc:
                raise _RowError(str(exc)) from None
            seen_files[image, label] = line  # only accepted rows: a duplicate of a broken
            seen_ids[ident] = line  # row gets that row's own message
        except _RowError as err:
            at = err.path or path
            message = f"{path} line {line}: {err}"
            problems.append(LayoutProblem(dataset, case_id, at, message, err.rule))
            continue
        cases.append(
            Case(
                case_id,
                image,
                label,
                names,
                modality,
                dataset,
                sequence=sequence,
                split=want,
            )
        )
    return cases, problems


class _RowError(Exception):
    def __init__(self, message: str, path: Path | None = None, rule: str = "bad_row") -> None:
        super().__init__(message)
        self.path = path
        self.rule = rule


def read_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    """``(line number, row)`` pairs with stripped values; rows that are all empty are skipped.

    Raises:
        ValueError: not UTF-8, no header, or a required column missing.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a UTF-8 text file (expected a CSV manifest)") from None
    reader = csv.DictReader(text.splitlines())
    fields = [(f or "").strip().lower() for f in reader.fieldnames or []]
    missing = [c for c in REQUIRED if c not in fields]
    if missing:
        raise ValueError(
            f"{path}: manifest needs the columns {', '.join(REQUIRED)}; missing "
            f"{', '.join(missing)} (found {', '.join(fields) or 'no header'})"
        )
    rows: list[tuple[int, dict[str, str]]] = []
    for raw in reader:
        row = {
            (k or "").strip().lower(): (v or "").strip()
            for k, v in raw.items()
            if isinstance(v, str) or v is None
        }
        if any(row.values()):
            rows.append((reader.line_num, row))
    return rows


def parse_label_names(text: str, base: Path) -> dict[str, int]:
    """Class name -> value from a manifest ``labels`` cell.

    Accepts ``1=liver;2=liver tumor``, a JSON object in either orientation (``{"1": "liver"}``
    or ``{"liver": 1}``), or the path of a ``.json`` file (relative to ``base``) holding one.

    Raises:
        ValueError: empty, malformed, repeated names or values, or only background.
        OSError: the JSON file cannot be read.
    """
    text = text.strip()
    if not text:
        raise ValueError("labels is empty: give value=name pairs such as 1=liver;2=liver tumor")
    data: Any
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"labels is not valid JSON: {exc}") from None
    elif text.lower().endswith(".json"):
        file = _resolve(base, text)
        if not file.is_file():
            raise FileNotFoundError(f"label names file not found: {file}")
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{file} is not valid JSON: {exc}") from None
        if isinstance(data, dict) and isinstance(data.get("labels"), dict):
            data = data["labels"]  # a dataset.json-like file
    else:
        data = {}
        for pair in filter(None, (p.strip() for p in text.split(";"))):
            value, sep, name = pair.partition("=")
            if not sep or not value.strip().isdigit() or not name.strip():
                raise ValueError(
                    f"cannot read {pair!r} in labels: expected value=name pairs such as "
                    "1=liver;2=liver tumor"
                )
            if value.strip() in data:
                raise ValueError(f"label value {value.strip()} is named twice in labels")
            data[value.strip()] = name.strip()
    return parse_label_map(data, "labels")


def _resolve(base: Path, text: str) -> Path:
    p = Path(text).expanduser()
    return p if p.is_absolute() else base / p


READER = LayoutReader(
    name="manifest",
    looks_for=f"a .csv manifest or {MANIFEST_NAME} (columns image, label, modality, labels)",
    detect=detect,
    discover=discover,
)
