"""Thresholds of the 4-step mask cleaning (:class:`CleaningConfig`), without numpy.

The cleaning itself is :mod:`sammed3d.data.cleaning`; this module holds only its settings and
their defaults (the paper's), so that ``sammed3d prepare --help`` can show the defaults from
the one place that defines them without loading numpy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: Paired (left/right) structures split by step 4, as normalised class names. Plural forms
#: ("kidneys") match too. Names that already carry a side ("kidney_left") are never split.
#: The paired categories of the catalogue (``sammed3d/data/categories.csv``) are all here
#: (checked by a test); "clavicle" and "eye" are kept for names that bypass the catalogue.
PAIRED_STRUCTURES: tuple[str, ...] = (
    "accumbens",
    "adrenal_gland",
    "amygdala",
    "autochthon",
    "brachiocephalic_vein",
    "breast",
    "caudate",
    "clavicle",
    "clavicula",
    "cochlea",
    "common_carotid_artery",
    "eye",
    "eyeball",
    "femur",
    "femur_head",
    "fibula",
    "gluteus_maximus",
    "gluteus_medius",
    "gluteus_minimus",
    "hip",
    "hippocampus",
    "humerus",
    "iliac_artery",
    "iliac_vena",
    "iliopsoas",
    "inferior_lateral_ventricle",
    "internal_carotid_artery",
    "kidney",
    "kidney_cyst",
    "lacrimal_gland",
    "lateral_ventricle",
    "lens",
    "lung",
    "optic_nerve",
    "ovary",
    "pallidum",
    "parotid_gland",
    "patella",
    "putamen",
    "radius",
    "scapula",
    "subclavian_artery",
    "submandibular_gland",
    "thalamus",
    "tibia",
    "ulna",
)


@dataclass(frozen=True)
class CleaningConfig:
    """Thresholds of the cleaning steps (defaults: the paper's).

    Attributes:
        min_volume_mm3: Step 1, smallest kept physical volume (1 cm³ = 1000 mm³).
        min_extent_mm: Step 1, smallest kept bounding-box side (1.5 cm).
        max_background_fraction: Step 2, drop when the background share of the volume is
            larger than this (0.99). ``1.0`` disables the rule.
        background_crop: Step 2 measures the background share in the whole volume when
            ``None`` (the paper's wording); with an edge length ``n`` (e.g. 128, the training
            crop) it is measured in the ``n``-voxel cube centred on the mask's bounding box,
            padding counted as background, which is what the trainer's crop will see.
        max_components: Step 3, number of largest components kept (5). ``0`` disables.
        connectivity: Voxel connectivity for components: 6, 18 or 26.
        split_paired: Step 4 on/off.
        paired_classes: Normalised names of paired structures (see :data:`PAIRED_STRUCTURES`).
    """

    min_volume_mm3: float = 1000.0
    min_extent_mm: float = 15.0
    max_background_fraction: float = 0.99
    background_crop: int | None = None
    max_components: int = 5
    connectivity: int = 26
    split_paired: bool = True
    paired_classes: tuple[str, ...] = PAIRED_STRUCTURES

    def __post_init__(self) -> None:
        from sammed3d.data.cleaning import normalise_class_name  # numpy: not at --help time

        if self.min_volume_mm3 < 0 or self.min_extent_mm < 0:
            raise ValueError(
                "min_volume_mm3 and min_extent_mm must be >= 0, got "
                f"{self.min_volume_mm3} and {self.min_extent_mm}"
            )
        if not 0.0 <= self.max_background_fraction <= 1.0:
            raise ValueError(
                f"max_background_fraction must be in [0, 1], got {self.max_background_fraction}"
            )
        if self.background_crop is not None and self.background_crop < 1:
            raise ValueError(f"background_crop must be >= 1 or None, got {self.background_crop}")
        if self.max_components < 0:
            raise ValueError(f"max_components must be >= 0, got {self.max_components}")
        if self.connectivity not in (6, 18, 26):
            raise ValueError(f"connectivity must be 6, 18 or 26, got {self.connectivity}")
        names = tuple(normalise_class_name(n) for n in self.paired_classes)
        object.__setattr__(self, "paired_classes", names)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (stored with the outputs for resuming)."""
        d = asdict(self)
        d["paired_classes"] = list(self.paired_classes)
        return d


__all__ = ["PAIRED_STRUCTURES", "CleaningConfig"]
