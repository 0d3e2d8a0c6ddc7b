"""The category catalogue: synonyms, sides, unmapped names, consistency with curation step 4."""

from __future__ import annotations

from pathlib import Path

import pytest

from sammed3d.data.categories import (
    Catalogue,
    Category,
    default_catalogue,
    lookup_category,
    resolve_category,
)
from sammed3d.data.cleaning import PAIRED_STRUCTURES, paired_base

#: TotalSegmentator v2 class names (the file names under segmentations/): the canonical
#: vocabulary, so each must map to itself (lower-cased).
TOTALSEG_V2 = (
    "spleen kidney_right kidney_left gallbladder liver stomach pancreas adrenal_gland_right "
    "adrenal_gland_left lung_upper_lobe_left lung_lower_lobe_left lung_upper_lobe_right "
    "lung_middle_lobe_right lung_lower_lobe_right esophagus trachea thyroid_gland small_bowel "
    "duodenum colon urinary_bladder prostate kidney_cyst_left kidney_cyst_right sacrum "
    "vertebrae_S1 vertebrae_L5 vertebrae_L4 vertebrae_L3 vertebrae_L2 vertebrae_L1 "
    "vertebrae_T12 vertebrae_T11 vertebrae_T10 vertebrae_T9 vertebrae_T8 vertebrae_T7 "
    "vertebrae_T6 vertebrae_T5 vertebrae_T4 vertebrae_T3 vertebrae_T2 vertebrae_T1 "
    "vertebrae_C7 vertebrae_C6 vertebrae_C5 vertebrae_C4 vertebrae_C3 vertebrae_C2 "
    "vertebrae_C1 heart aorta pulmonary_vein brachiocephalic_trunk subclavian_artery_right "
    "subclavian_artery_left common_carotid_artery_right common_carotid_artery_left "
    "brachiocephalic_vein_left brachiocephalic_vein_right atrial_appendage_left "
    "superior_vena_cava inferior_vena_cava portal_vein_and_splenic_vein iliac_artery_left "
    "iliac_artery_right iliac_vena_left iliac_vena_right humerus_left humerus_right "
    "scapula_left scapula_right clavicula_left clavicula_right femur_left femur_right "
    "hip_left hip_right spinal_cord gluteus_maximus_left gluteus_maximus_right "
    "gluteus_medius_left gluteus_medius_right gluteus_minimus_left gluteus_minimus_right "
    "autochthon_left autochthon_right iliopsoas_left iliopsoas_right brain skull "
    + " ".join(f"rib_{side}_{i}" for side in ("left", "right") for i in range(1, 13))
    + " sternum costal_cartilages"
).split()


def test_totalsegmentator_names_are_canonical() -> None:
    assert len(TOTALSEG_V2) == 117
    assert {n: lookup_category(n) for n in TOTALSEG_V2} == {n: n.lower() for n in TOTALSEG_V2}


@pytest.mark.parametrize(
    ("name", "category"),
    [
        # the same organ across datasets
        ("liver", "liver"),
        ("Liver", "liver"),
        (" LIVER ", "liver"),
        ("hepatic", "liver"),
        ("gall bladder", "gallbladder"),  # AMOS
        ("arota", "aorta"),  # AMOS' spelling
        ("postcava", "inferior_vena_cava"),  # AMOS
        ("IVC", "inferior_vena_cava"),  # BTCV
        ("rkid", "kidney_right"),  # BTCV
        ("Kidneys", "kidney"),  # plural
        # sides written every way
        ("kidney_left", "kidney_left"),
        ("left kidney", "kidney_left"),
        ("Kidney L", "kidney_left"),
        ("Kidney (L)", "kidney_left"),
        ("kidney_R", "kidney_right"),
        ("right adrenal gland", "adrenal_gland_right"),  # AMOS
        ("Head_of_femur_L", "femur_head_left"),  # WORD
        ("Left rib 3", "rib_left_3"),
        ("left upper lobe", "lung_upper_lobe_left"),
        ("RML", "lung_middle_lobe_right"),
        ("LV", "heart_ventricle_left"),
        # brain structures (FreeSurfer, AAL)
        ("Left-Hippocampus", "hippocampus_left"),
        ("Hippocampus_L", "hippocampus_left"),
        ("Right-Lateral-Ventricle", "lateral_ventricle_right"),
        ("Left-Cerebral-White-Matter", "cerebral_white_matter_left"),
        ("Brain-Stem", "brainstem"),
        ("3rd-Ventricle", "third_ventricle"),
        ("Caudate_R", "caudate_right"),
        # bones / vertebrae
        ("C1", "vertebrae_c1"),
        ("vertebra T13", "vertebrae_t13"),
        ("L6", "vertebrae_l6"),
        ("clavicle", "clavicula"),
        # lesions
        ("liver tumour", "liver_tumor"),
        ("kidney tumor", "kidney_tumor"),
        ("GD-enhancing tumor", "enhancing_tumor"),
        ("NCR/NET", "necrotic_tumor_core"),
    ],
)
def test_lookup(name: str, category: str) -> None:
    assert lookup_category(name) == category
    assert category in default_catalogue()


@pytest.mark.parametrize(
    "name",
    [
        "tumour",  # whose?
        "tumor",
        "cancer",
        "lesion",
        "edema",
        "prostate/uterus",  # AMOS class 15: two organs
        "intestine",  # WORD: small or large?
        "veins",  # BTCV class 10
        "lad",  # BTCV left adrenal, or the coronary artery
        "vessel",
        "left and right kidney",  # two sides
        "left",
        "---",
    ],
)
def test_unmapped_names_are_not_guessed(name: str) -> None:
    assert lookup_category(name) is None


def test_resolve_keeps_unmapped_names() -> None:
    assert resolve_category("Left Kidney") == ("kidney_left", True)
    assert resolve_category("Prostate/Uterus") == ("prostate_uterus", False)
    with pytest.raises(ValueError, match="no letters or digits"):
        resolve_category("--")


def test_paired_structures_agree_with_curation_step_4() -> None:
    """Step 4 splits exactly into categories of the catalogue, and every paired category of
    the catalogue is split by step 4."""
    catalogue = default_catalogue()
    paired = {c.name for c in catalogue if c.paired}
    assert paired <= set(PAIRED_STRUCTURES)
    for base in PAIRED_STRUCTURES:
        category = catalogue.lookup(base)
        assert category in paired, base
        for side in ("left", "right"):
            assert catalogue.lookup(f"{base}_{side}") == f"{category}_{side}"
            assert catalogue.categories[f"{category}_{side}"].side_of == category
        assert paired_base(category) == category
    # Sided categories of structures that cross the midline are not split by step 4.
    assert paired_base("cerebral_white_matter") is None
    assert "cerebral_white_matter_left" in catalogue


def test_groups_cover_the_issue_scope() -> None:
    groups = {c.group for c in default_catalogue()}
    assert groups >= {"abdomen", "vessel", "bone", "brain", "lesion"}


def test_catalogue_rejects_conflicts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'la' names both"):
        Catalogue([Category("heart_atrium_left", "heart", synonyms=("la",)),
                   Category("lacrimal", "head_neck", synonyms=("la",))])  # fmt: skip
    with pytest.raises(ValueError, match="not in normalised form"):
        Catalogue([Category("Liver", "abdomen")])
    with pytest.raises(ValueError, match="appears twice"):
        Catalogue([Category("liver", "abdomen"), Category("liver", "abdomen")])
    table = tmp_path / "c.csv"
    table.write_text("# comment\ncategory,group,paired,synonyms\nliver,abdomen,maybe,\n")
    with pytest.raises(ValueError, match="line 3: paired must be 'yes' or empty"):
        Catalogue.from_csv(table)
    table.write_text("category,group\nliver,abdomen\n")
    with pytest.raises(ValueError, match="expected the columns"):
        Catalogue.from_csv(table)
    table.write_text("category,group,paired,synonyms\nkidney,abdomen,yes,kidneys|Nieren\n")
    own = Catalogue.from_csv(table)
    assert own.lookup("Niere L") is None and own.lookup("nieren_l") == "kidney_left"
