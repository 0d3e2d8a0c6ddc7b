"""BIDS with derivatives (VerSe style): images under subject/session folders, labels under
``derivatives/``, matched by entity::

    root/rawdata/sub-gl003/sub-gl003_dir-ax_ct.nii.gz             (or root/sub-*/... directly;
                                                                   ses-*/ and anat/ allowed)
    root/derivatives/sub-gl003/sub-gl003_dir-ax_seg-vert_msk.nii.gz
    root/derivatives/sub-gl003/sub-gl003_dir-ax_seg-subreg_ctd.json  (VerSe centroids)

A label file is a volume under ``derivatives/`` (any depth) whose suffix is ``dseg`` (BIDS
discrete segmentation), ``msk`` (VerSe) or ``mask`` (BIDS binary mask with ``label-<name>``).
It belongs to the images whose entities equal its own after removing ``seg``, ``label``,
``desc``, ``space`` and ``res``. The image suffix gives the modality (``ct`` -> CT; ``T1w``,
``T2w``, ``FLAIR``, ... -> MR, with the suffix as ``sequence`` and in the dataset name);
several images of one key
(T1w and T2w of a session) become separate cases sharing the label.

Label names, in order: a ``label-<name>`` entity (``mask``, value 1); a BIDS ``.tsv`` sidecar
of the label file (columns ``index`` and ``name``); a ``dseg.tsv`` in a folder above it up to
the root; the VerSe vertebra numbering for ``seg-vert`` (1-7 C1-C7, 8-19 T1-T12, 20-25
L1-L6, 26 sacrum, 27 coccyx, 28 T13). For VerSe the centroid file of the scan restricts the
classes to the vertebrae it lists. A label with no names is a problem, not a guess.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import defaultdict
from pathlib import Path

from sammed3d.data.dataset_json import normalise_modality
from sammed3d.data.layouts.base import (
    DETECT_SAMPLE,
    Case,
    Discovery,
    LayoutProblem,
    LayoutReader,
    Split,
    is_volume,
    labels_in_order,
    safe_name,
    sequence_dataset,
    strip_ending,
    subdirs,
    unsplit,
)

logger = logging.getLogger(__name__)

DERIVATIVES = "derivatives"
RAWDATA = "rawdata"
LABEL_SUFFIXES = ("dseg", "msk", "mask")
#: Entities that describe the label, not the scan: removed before matching.
_LABEL_ENTITIES = ("seg", "label", "desc", "space", "res")
_SKIP_DIRS = {DERIVATIVES, "sourcedata", "code", "stimuli", "phenotype"}

#: VerSe label values (https://github.com/anjany/verse, "Data").
VERSE_LABELS: dict[str, int] = {
    **{f"C{i}": i for i in range(1, 8)},
    **{f"T{i}": 7 + i for i in range(1, 13)},
    **{f"L{i}": 19 + i for i in range(1, 7)},
    "sacrum": 26,
    "coccyx": 27,
    "T13": 28,
}

Entities = dict[str, str]


def parse_name(name: str) -> tuple[Entities, str] | None:
    """``"sub-01_ses-2_T1w.nii.gz"`` -> ``({"sub": "01", "ses": "2"}, "T1w")``; None if not BIDS."""
    parts = strip_ending(name).split("_")
    if len(parts) < 2 or not parts[0].startswith("sub-"):
        return None
    entities: Entities = {}
    for part in parts[:-1]:
        key, sep, value = part.partition("-")
        if not sep or not key or not value:
            return None
        entities[key] = value
    suffix = parts[-1]
    if "-" in suffix or not suffix:
        return None
    return entities, suffix


def detect(root: Path) -> bool:
    if not (root / DERIVATIVES).is_dir():
        return False
    raw = root / RAWDATA if (root / RAWDATA).is_dir() else root
    return any(d.name.startswith("sub-") for d in subdirs(raw)[: DETECT_SAMPLE * 4])


def discover(root: Path, split: Split) -> Discovery:
    if not (root / DERIVATIVES).is_dir():
        raise FileNotFoundError(f"no {DERIVATIVES}/ folder in {root} (BIDS labels live there)")
    raw = root / RAWDATA if (root / RAWDATA).is_dir() else root
    dataset = safe_name(root.name)

    images: dict[tuple[tuple[str, str], ...], list[tuple[Path, str]]] = defaultdict(list)
    for path in _volumes(raw):
        parsed = parse_name(path.name)
        if parsed and parsed[1] not in LABEL_SUFFIXES:
            images[_key(parsed[0])].append((path, parsed[1]))

    labels: list[tuple[Path, Entities, str]] = []
    for path in sorted((root / DERIVATIVES).rglob("*")):
        if not is_volume(path):
            continue
        parsed = parse_name(path.name)
        if parsed and parsed[1] in LABEL_SUFFIXES:
            labels.append((path, parsed[0], parsed[1]))
    per_key: dict[tuple[tuple[str, str], ...], int] = defaultdict(int)
    for _, ents, _ in labels:
        per_key[_key(_scan_entities(ents))] += 1

    cases: list[Case] = []
    problems: list[LayoutProblem] = []
    used: set[tuple[tuple[str, str], ...]] = set()
    for path, ents, suffix in labels:
        scan = _scan_entities(ents)
        key = _key(scan)
        case_id = "_".join(f"{k}-{v}" for k, v in scan.items())
        if per_key[key] > 1:  # several label files for one scan: tell them apart
            case_id += "_" + "_".join(f"{k}-{ents[k]}" for k in _LABEL_ENTITIES if k in ents)
        matches = images.get(key, [])
        if not matches:
            problems.append(
                LayoutProblem(
                    dataset,
                    case_id,
                    path,
                    f"no image for {path}: expected {raw}/sub-{scan['sub']}/.../{case_id}_"
                    "<suffix>.nii.gz with the same entities",
                )
            )
            continue
        names, why = _label_names(path, ents, suffix, root)
        if names is None:
            problems.append(LayoutProblem(dataset, case_id, path, why, "no_label_names"))
            continue
        used.add(key)
        for image, image_suffix in sorted(matches):
            modality = normalise_modality(image_suffix)
            sequence = image_suffix if modality == "MR" else None
            cases.append(
                Case(
                    case_id,
                    image,
                    path,
                    names,
                    modality,
                    sequence_dataset(dataset, sequence),
                    sequence=sequence,
                    split=unsplit(split),
                )
            )
    unlabelled = sorted(p for k, v in images.items() if k not in used for p, _ in v)
    if unlabelled:
        logger.info(
            "%s: %d image(s) without a label under %s/ skipped (e.g. %s)",
            root,
            len(unlabelled),
            DERIVATIVES,
            unlabelled[0],
        )
    if not cases and not problems:
        raise ValueError(
            f"no label files under {root / DERIVATIVES}: expected sub-*/..._dseg.nii.gz, "
            "..._seg-<name>_msk.nii.gz (VerSe) or ..._label-<name>_mask.nii.gz"
        )
    return cases, problems


def read_dseg_tsv(path: Path) -> dict[str, int]:
    """Class name -> value from a BIDS ``dseg.tsv`` (columns ``index`` and ``name``).

    Raises:
        ValueError: missing columns, a non-integer index, or a repeated name/value.
    """
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        fields = [f.strip() for f in reader.fieldnames or []]
        if "index" not in fields or "name" not in fields:
            raise ValueError(f"{path}: expected tab-separated columns index and name, got {fields}")
        out: dict[str, int] = {}
        for n, row in enumerate(reader, 2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            try:
                value = int(row["index"])
            except ValueError:
                raise ValueError(
                    f"{path} line {n}: index {row['index']!r} is not an integer"
                ) from None
            name = row["name"]
            if value == 0 or name.lower() == "background":
                continue
            if name in out or value in out.values():
                raise ValueError(f"{path} line {n}: name {name!r} or value {value} repeats")
            out[name] = value
    if not out:
        raise ValueError(f"{path}: no foreground labels")
    return out


def _label_names(
    path: Path, ents: Entities, suffix: str, root: Path
) -> tuple[dict[str, int] | None, str]:
    if suffix == "mask" and "label" in ents:
        return {ents["label"]: 1}, ""
    sidecar = path.with_name(strip_ending(path.name) + ".tsv")
    candidates = [sidecar] + [d / "dseg.tsv" for d in path.parents if root in (d, *d.parents)]
    for tsv in candidates:
        if tsv.is_file():
            try:
                return labels_in_order(read_dseg_tsv(tsv)), ""
            except ValueError as exc:
                return None, str(exc)
    if ents.get("seg") == "vert":
        return labels_in_order(_verse_present(path, ents) or VERSE_LABELS), ""
    return None, (
        f"no label names for {path}: add {sidecar.name} (tab-separated columns index, name; "
        "BIDS dseg.tsv) or a dseg.tsv in a folder above it"
    )


def _verse_present(path: Path, ents: Entities) -> dict[str, int] | None:
    """The VerSe classes listed in the scan's centroid file (``..._ctd.json``), if any."""
    key = _key(_scan_entities(ents))
    for ctd in sorted(path.parent.glob("*_ctd.json")):
        parsed = parse_name(ctd.name.removesuffix(".json"))
        if not parsed or _key(_scan_entities(parsed[0])) != key:
            continue
        try:
            data = json.loads(ctd.read_text(encoding="utf-8"))
            values = {int(d["label"]) for d in data if isinstance(d, dict) and "label" in d}
        except (OSError, ValueError, TypeError, KeyError):
            logger.debug("unreadable centroid file %s; all VerSe labels kept", ctd)
            return None
        return {n: v for n, v in VERSE_LABELS.items() if v in values} or None
    return None


def _scan_entities(ents: Entities) -> Entities:
    return {k: v for k, v in ents.items() if k not in _LABEL_ENTITIES}


def _key(ents: Entities) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(ents.items()))


def _volumes(raw: Path) -> list[Path]:
    out: list[Path] = []
    for d in subdirs(raw):
        if d.name.startswith("sub-") and d.name not in _SKIP_DIRS:
            out += [p for p in d.rglob("*") if is_volume(p)]
    return sorted(out)


READER = LayoutReader(
    name="bids",
    looks_for="sub-*/ (or rawdata/sub-*/) with labels under derivatives/ (BIDS, VerSe)",
    detect=detect,
    discover=discover,
)
