#!/usr/bin/env python
"""Tuning sets from the MNI152 training source and the generator, for choices made after
training (e.g. the bundled model's ``zoom_spacing``), so that no choice is made on the
held-out sets.

Same rules as the held-out sets of ``tools/build_demo_data.py`` (its functions), on the
MNI152 2009a T1 (PyPI nilearn) that training already uses:

* ``Dataset301_MNI152_Brain``: the whole brain;
* ``Dataset302_MNI152_Tissue``: white matter (1) and lateral ventricles (2);
* ``Dataset304_MNI152_Lesions``: 16 synthetic lesions (``place_lesion``, seed 777), 1 mm;
* ``Dataset305_MNI152_Lesions15``: the same cases resampled to 1.5 mm (a coarser scanner);
* with ``--fresh-lesions N``: ``Dataset306_MNI152_LesionsB`` (N more lesions, seed 778) and
  ``Dataset307_MNI152_LesionsB15`` (1.5 mm), for a choice that must not be made on the sets a
  rule was already chosen on;
* with ``--synthetic N``: ``Dataset308_Synthetic``, N crops of the generator from seeds
  60,000 + i (a range that training, the held-out set ``Dataset205_Synthetic`` (seeds from 0)
  and the validation crops of ``tools/validation_crops.py`` (40,000+, 50,000+) never draw),
  the tuning twin of the held-out generated crops; written afresh (a smaller N leaves no old
  cases behind). ``--only-synthetic`` writes that set alone.

    .venv/bin/python tools/build_tuning_sets.py [--out data/model/tune] [--cache DIR]
                                              [--fresh-lesions N] [--synthetic N]
                                              [--only-synthetic]

The MNI152 sets need the sources that ``build_demo_data.py`` downloads (it fetches them if
missing); ``--only-synthetic`` needs none.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_demo_data import (  # noqa: E402
    fetch_sources,
    fill_holes,
    generated_cases,
    largest_component,
    visible_structures,
    write_dataset,
    write_lesion_set,
    write_structure_sets,
)

from sammed3d.io import read_volume  # noqa: E402

LESIONS = 16
SEED = 777
#: First generator seed of ``Dataset308_Synthetic``.
SYNTHETIC_SEED = 60_000


def resample_dataset(src: Path, dst: Path, spacing: float) -> None:
    """Copy an nnU-Net test set to ``spacing`` mm (linear images, nearest labels)."""
    for sub, interp in (("imagesTs", sitk.sitkLinear), ("labelsTs", sitk.sitkNearestNeighbor)):
        (dst / sub).mkdir(parents=True, exist_ok=True)
        for f in sorted((src / sub).glob("*.nii.gz")):
            im = sitk.ReadImage(str(f))
            size = [
                int(round(n * s / spacing))
                for n, s in zip(im.GetSize(), im.GetSpacing(), strict=True)
            ]
            out = sitk.Resample(
                im, size, sitk.Transform(), interp, im.GetOrigin(), (spacing,) * 3,
                im.GetDirection(), 0.0, im.GetPixelID(),
            )  # fmt: skip
            sitk.WriteImage(out, str(dst / sub / f.name))
    shutil.copy(src / "dataset.json", dst / "dataset.json")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=" ".join(__doc__.split("\n\n")[0].split()).replace("``", "")
    )
    parser.add_argument(
        "--out", type=Path, default=Path("data/model/tune"), help="folder (default: %(default)s)"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(".cache/demo_sources"),
        help="downloaded sources (default: %(default)s)",
    )
    parser.add_argument(
        "--fresh-lesions",
        type=int,
        default=0,
        metavar="N",
        help="also N fresh lesions at 1 and 1.5 mm (Dataset306/307; default: none)",
    )
    parser.add_argument(
        "--synthetic",
        type=int,
        default=0,
        metavar="N",
        help="also N generated crops, seeds 60,000+ (Dataset308; default: none)",
    )
    parser.add_argument(
        "--only-synthetic", action="store_true", help="write Dataset308_Synthetic only"
    )
    args = parser.parse_args()
    for name in ("fresh_lesions", "synthetic"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.only_synthetic and args.synthetic <= 0:
        parser.error("--only-synthetic needs --synthetic N with N >= 1")
    if args.only_synthetic and args.fresh_lesions:
        parser.error("--only-synthetic writes the generated crops only: drop --fresh-lesions")
    root = args.out
    if args.synthetic > 0:
        shutil.rmtree(root / "Dataset308_Synthetic", ignore_errors=True)
        write_dataset(
            root,
            "Dataset308_Synthetic",
            generated_cases(args.synthetic, SYNTHETIC_SEED),
            {"target": 1},
            "MR",
        )
        if args.only_synthetic:
            print(f"wrote 1 tuning set under {root}")
            return
    src = fetch_sources(args.cache)
    mni = read_volume(src["mni_t1"])
    gm = read_volume(src["mni_gm"]).array.astype(np.float32)
    wm = read_volume(src["mni_wm"]).array.astype(np.float32)
    brain = largest_component(fill_holes(ndimage.binary_closing(gm + wm > 127, iterations=2)))
    found = visible_structures(mni.array, brain, float(np.mean(mni.spacing)))
    write_structure_sets(
        root, ("Dataset301_MNI152_Brain", "Dataset302_MNI152_Tissue"), "mni152", mni, found
    )
    write_lesion_set(
        root, "Dataset304_MNI152_Lesions", "mni152", mni, found["whole_brain"], LESIONS, SEED
    )
    resample_dataset(root / "Dataset304_MNI152_Lesions", root / "Dataset305_MNI152_Lesions15", 1.5)
    written = 4
    if args.fresh_lesions > 0:
        write_lesion_set(
            root,
            "Dataset306_MNI152_LesionsB",
            "mni152b",
            mni,
            found["whole_brain"],
            args.fresh_lesions,
            SEED + 1,
        )
        resample_dataset(
            root / "Dataset306_MNI152_LesionsB", root / "Dataset307_MNI152_LesionsB15", 1.5
        )
        written += 2
    written += args.synthetic > 0
    print(f"wrote {written} tuning sets under {root}")


if __name__ == "__main__":
    main()
