"""``report.json`` of ``sammed3d prepare`` and the per-rule counts its console summary prints."""

from __future__ import annotations

from sammed3d.data.cleaning import CleaningConfig
from sammed3d.data.curation_report import build_report, describe_rule, rule_counts


def _mask(case: str, status: str, rule: str | None, name: str = "liver") -> dict:
    return {
        "source": "/raw/ds",
        "dataset": "ds",
        "case": case,
        "modality": "CT",
        "class_name": name,
        "source_class": name,
        "category_mapped": True,
        "status": status,
        "rule": rule,
        "image": f"/raw/ds/imagesTr/{case}.nii.gz",
        "label": f"/raw/ds/labelsTr/{case}.nii.gz",
    }


SKIPPED = {
    "source": "/raw/ds",
    "dataset": "ds",
    "case": "c9",
    "modality": None,
    "class_name": None,
    "source_class": None,
    "status": "skipped",
    "rule": "missing_file",
    "message": "no label for /raw/ds/imagesTr/c9.nii.gz: expected /raw/ds/labelsTr/c9.nii.gz",
    "file": "/raw/ds/imagesTr/c9.nii.gz",
    "image": None,
    "label": None,
}
RECORDS = [
    _mask("c1", "kept", None),
    _mask("c1", "dropped", "min_volume", "spleen"),
    _mask("c2", "dropped", "empty"),
    _mask("c2", "dropped", "min_volume", "spleen"),
    _mask("c3", "dropped", "max_background"),
    SKIPPED,
]


def test_rule_counts_rank_by_count_then_name() -> None:
    assert rule_counts(RECORDS, "dropped") == {"min_volume": 2, "empty": 1, "max_background": 1}
    assert rule_counts(RECORDS, "skipped") == {"missing_file": 1}
    assert rule_counts(RECORDS, "error") == {}


def test_describe_rule_names_the_threshold_in_use() -> None:
    paper = CleaningConfig()
    assert describe_rule("min_volume", paper) == "smaller than 1000 mm³"
    assert describe_rule("min_extent", paper) == "with a bounding-box side under 15 mm"
    assert describe_rule("max_background", paper) == "with background over 99% of the volume"
    loose = CleaningConfig(min_volume_mm3=20, max_background_fraction=0.5, background_crop=128)
    assert describe_rule("min_volume", loose) == "smaller than 20 mm³"
    assert describe_rule("max_background", loose) == "with background over 50% of the 128³ crop"
    assert describe_rule("missing_file") == "with a missing image or label file"
    assert describe_rule("integrity:shape") == "integrity:shape"  # no description: as it is


def test_skipped_cases_are_listed_apart_from_the_mask_counts() -> None:
    report = build_report(RECORDS)
    assert report["skipped"] == [
        {
            "dataset": "ds",
            "case": "c9",
            "rule": "missing_file",
            "file": "/raw/ds/imagesTr/c9.nii.gz",
            "message": SKIPPED["message"],
        }
    ]
    totals = report["totals"]
    assert (totals["cases"], totals["cases_skipped"], totals["cases_failed"]) == (4, 1, 0)
    assert (totals["masks"], totals["kept"], totals["dropped"]) == (5, 1, 4)
    assert report["by_rule"] == {"empty": 1, "max_background": 1, "min_volume": 2}
    assert set(report["by_class"]) == {"liver", "spleen"}  # no "(unknown)" class
    assert report["by_modality"] == {"CT": {"kept": 1, "dropped": 4}}
    assert report["errors"] == []
