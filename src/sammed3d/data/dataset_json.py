"""Parse and validate nnU-Net (v2) and Medical Segmentation Decathlon ``dataset.json`` files.

Both flavours are accepted and normalised into one :class:`DatasetJson`:

* nnU-Net v2: ``{"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1},
  "numTraining": 131, "file_ending": ".nii.gz"}``
* MSD / nnU-Net v1: ``{"modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver"},
  "numTraining": 131, "training": [...]}`` (file ending ``.nii.gz``).

Only the facts the rest of sammed3d needs are kept (class names and values, the modality of
channel 0, the file ending); the raw mapping stays available as :attr:`DatasetJson.raw`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Modality spellings (lower case, after removing non-letters/digits) -> canonical name.
_MODALITY_ALIASES: dict[str, str] = {
    "ct": "CT",
    "cta": "CT",
    "cect": "CT",
    "ncct": "CT",
    "computedtomography": "CT",
    "mr": "MR",
    "mri": "MR",
    "magneticresonance": "MR",
    "t1": "MR",
    "t1w": "MR",
    "t1c": "MR",
    "t1ce": "MR",
    "t1gd": "MR",
    "t1km": "MR",
    "t2": "MR",
    "t2w": "MR",
    "t2star": "MR",
    "flair": "MR",
    "t2flair": "MR",
    "adc": "MR",
    "dwi": "MR",
    "pd": "MR",
    "pdw": "MR",
    "swi": "MR",
    "bssfp": "MR",
    "cine": "MR",
    "lge": "MR",
    "us": "US",
    "ultrasound": "US",
    "abus": "US",
    "pet": "PET",
    "spect": "SPECT",
    "xray": "XR",
    "cbct": "CT",
}


#: The modalities a user may name (``--modality``, ``set_image(modality=)``): the canonical
#: values :func:`normalise_modality` gives, "unknown" aside.
KNOWN_MODALITIES = ("CT", "MR", "PET", "SPECT", "US", "XR")


def normalise_modality(name: object) -> str:
    """Canonical modality for a ``channel_names``/``modality`` entry or a folder prefix.

    ``"CT"``/``"ct"`` -> ``"CT"``; ``"MRI"``, ``"T1"``, ``"T2w"``, ``"FLAIR"``, ``"ADC"``, ... ->
    ``"MR"``; ``"US"``/``"ultrasound"`` -> ``"US"``; ``"PET"`` -> ``"PET"``. Anything else
    (including nnU-Net normalisation-scheme names such as ``"zscore"`` or ``"noNorm"``) gives
    ``"unknown"``.

    Args:
        name: The raw value (usually a string).

    Returns:
        One of ``"CT"``, ``"MR"``, ``"US"``, ``"PET"``, ``"SPECT"``, ``"XR"`` or ``"unknown"``.
    """
    if not isinstance(name, str):
        return "unknown"
    key = re.sub(r"[^a-z0-9]", "", name.strip().lower())
    if key in _MODALITY_ALIASES:
        return _MODALITY_ALIASES[key]
    # Compound names such as "MRI T2" or "T1-weighted MR": look at the words.
    for word in re.split(r"[^a-z0-9]+", name.strip().lower()):
        if word in _MODALITY_ALIASES:
            return _MODALITY_ALIASES[word]
    return "unknown"


def check_modality(modality: object) -> str | None:
    """A modality a person named (``set_image(modality=)``, a predictor's, ``--modality``), in
    canonical form: a known code or a name of one (``"ct"`` -> ``"CT"``; ``"MRI"``, ``"T1"``,
    ``"FLAIR"`` -> ``"MR"``; :func:`normalise_modality`). None stays None.

    File headers are read with :func:`sammed3d.inference.predictor.normalise_modality`
    instead, which passes other codes through (``"NM"``, ``"OT"``): a header is not a typo.

    Raises:
        ValueError: anything else, such as ``"CTX"`` (one line naming the known modalities;
            a typo would otherwise skip the CT clamp silently).
    """
    if modality is None:
        return None
    value = normalise_modality(modality)
    if value not in KNOWN_MODALITIES:
        raise ValueError(
            f"modality {modality!r} is not one of {', '.join(KNOWN_MODALITIES)} (or a name of "
            "one, such as MRI, T1, T2 or FLAIR for MR)"
        )
    return value


@dataclass(frozen=True)
class DatasetJson:
    """The parts of a ``dataset.json`` that sammed3d uses.

    Attributes:
        labels: Class name -> voxel value in the label files, background excluded, sorted by
            value. Names are kept exactly as written (normalisation across datasets is the
            category catalogue's job).
        channel_names: Channel index (``"0"``, ``"1"``, ...) -> raw name as written.
        modality: Canonical modality of channel 0 (see :func:`normalise_modality`).
        file_ending: File ending of images and labels, e.g. ``".nii.gz"``.
        num_training: ``numTraining`` if given.
        name: ``name`` if given, else ``None``.
        flavour: ``"nnunet_v2"`` or ``"msd"`` (which ``labels`` orientation was found).
        path: Where it was read from, if anywhere.
        raw: The parsed JSON object, untouched.
    """

    labels: dict[str, int]
    channel_names: dict[str, str]
    modality: str
    file_ending: str = ".nii.gz"
    num_training: int | None = None
    name: str | None = None
    flavour: str = "nnunet_v2"
    path: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def label_values(self) -> frozenset[int]:
        """All declared voxel values, background (0) included."""
        return frozenset({0, *self.labels.values()})


def read_dataset_json(path: str | Path) -> DatasetJson:
    """Read and validate a ``dataset.json`` file.

    Args:
        path: The file, or the dataset folder that holds it.

    Returns:
        The parsed :class:`DatasetJson`.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not valid JSON or not a valid dataset description (the message names the
            file, the key and what was expected).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(f"no dataset.json at {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    return parse_dataset_json(data, source=path)


def parse_dataset_json(data: object, *, source: str | Path = "dataset.json") -> DatasetJson:
    """Validate an already-loaded ``dataset.json`` object.

    Args:
        data: The JSON object (a mapping).
        source: Name used in error messages (and stored as ``path`` if it is a path).

    Returns:
        The parsed :class:`DatasetJson`.

    Raises:
        ValueError: a required key is missing or has the wrong type/values.
    """
    where = str(source)
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a JSON object at the top level, got {_kind(data)}")
    if "labels" not in data:
        raise ValueError(f"{where}: missing required key 'labels' (class name -> label value)")
    labels, flavour = _parse_labels(data["labels"], where)

    channels_raw = data.get("channel_names", data.get("modality"))
    if channels_raw is None:
        logger.warning("%s: no 'channel_names' or 'modality'; modality is 'unknown'", where)
        channel_names: dict[str, str] = {}
    elif isinstance(channels_raw, Mapping):
        channel_names = {str(k): str(v) for k, v in channels_raw.items()}
    else:
        key = "channel_names" if "channel_names" in data else "modality"
        raise ValueError(
            f'{where}: \'{key}\' must be an object like {{"0": "CT"}}, got {_kind(channels_raw)}'
        )
    if channel_names and "0" not in channel_names:
        raise ValueError(
            f'{where}: channel names must be keyed "0", "1", ...; got keys {sorted(channel_names)}'
        )
    modality = normalise_modality(channel_names.get("0"))
    if channel_names and modality == "unknown":
        logger.warning(
            "%s: channel 0 is %r, which is not a known modality; using 'unknown'",
            where,
            channel_names["0"],
        )

    file_ending = data.get("file_ending", ".nii.gz")
    if not isinstance(file_ending, str) or not file_ending.startswith("."):
        raise ValueError(
            f"{where}: 'file_ending' must be a string starting with '.', e.g. \".nii.gz\"; "
            f"got {file_ending!r}"
        )

    num_training = data.get("numTraining")
    if num_training is not None and (
        isinstance(num_training, bool) or not isinstance(num_training, int) or num_training < 0
    ):
        raise ValueError(
            f"{where}: 'numTraining' must be a non-negative integer, got {num_training!r}"
        )

    name = data.get("name")
    return DatasetJson(
        labels=labels,
        channel_names=channel_names,
        modality=modality,
        file_ending=file_ending,
        num_training=num_training,
        name=name if isinstance(name, str) and name.strip() else None,
        flavour=flavour,
        path=Path(source) if isinstance(source, Path) else None,
        raw=dict(data),
    )


def parse_label_map(raw: object, where: str = "labels") -> dict[str, int]:
    """Validate a ``labels`` object in either orientation (see :func:`parse_dataset_json`).

    Returns:
        Class name -> value, background excluded, sorted by value.

    Raises:
        ValueError: not a non-empty object, a bad entry, a repeated name or value, a negative
            value, or no foreground class (the message starts with ``where``).
    """
    return _parse_labels(raw, where)[0]


def _parse_labels(raw: object, where: str) -> tuple[dict[str, int], str]:
    """``labels`` in either orientation -> (name -> value without background, flavour)."""
    if not isinstance(raw, Mapping) or not raw:
        raise ValueError(
            f"{where}: 'labels' must be a non-empty object, e.g. {{\"background\": 0, "
            f'"liver": 1}} (nnU-Net v2) or {{"0": "background", "1": "liver"}} (MSD); '
            f"got {_kind(raw)}"
        )
    pairs: list[tuple[str, int]] = []
    flavours: set[str] = set()
    for key, value in raw.items():
        key = str(key)
        if isinstance(value, str) and _is_int(key):  # MSD: "1": "liver"
            pairs.append((value, int(key)))
            flavours.add("msd")
        elif _is_int_value(value):  # v2: "liver": 1
            pairs.append((key, int(value)))  # type: ignore[arg-type]
            flavours.add("nnunet_v2")
        elif isinstance(value, (list, tuple)):
            ints = [v for v in value if _is_int_value(v)]
            if len(ints) == len(value) == 1:  # a one-value "region" is just a label
                pairs.append((key, int(ints[0])))
                flavours.add("nnunet_v2")
                continue
            logger.warning(
                "%s: label %r is a region of several values %s; regions are not supported "
                "and it is ignored",
                where,
                key,
                list(value),
            )
            flavours.add("nnunet_v2")
        else:
            raise ValueError(
                f"{where}: cannot read label entry {key!r}: {value!r}; expected "
                f'"name": <int> (nnU-Net v2) or "<int>": "name" (MSD)'
            )
    labels: dict[str, int] = {}
    seen_values: dict[int, str] = {}
    for name, value in pairs:
        name = name.strip()
        if not name:
            raise ValueError(f"{where}: label value {value} has an empty name")
        if value < 0:
            raise ValueError(f"{where}: label {name!r} has a negative value {value}")
        if value == 0 or name.lower() == "background":
            if value != 0:
                raise ValueError(f"{where}: 'background' must have value 0, got {value}")
            continue
        if name in labels:
            raise ValueError(f"{where}: label name {name!r} appears twice")
        if value in seen_values:
            raise ValueError(
                f"{where}: labels {seen_values[value]!r} and {name!r} share the value {value}"
            )
        labels[name] = value
        seen_values[value] = name
    if not labels:
        raise ValueError(f"{where}: 'labels' declares no foreground class (only background)")
    flavour = "msd" if flavours == {"msd"} else "nnunet_v2"
    return dict(sorted(labels.items(), key=lambda kv: kv[1])), flavour


def _is_int(text: str) -> bool:
    return bool(re.fullmatch(r"\s*\d+\s*", text))


def _is_int_value(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and value.is_integer()


def _kind(value: object) -> str:
    return f"{type(value).__name__} {value!r}"[:120]
