"""The bundled demonstration: one click per named brain structure on a held-out MRI.

The demo volume is the Colin27 T1 MRI with its AAL atlas (``sammed3d/assets/demo``, see its
NOTICE), which the bundled model never saw in training. For each structure the click is the
atlas structure's most interior voxel (the "center" click rule), the mask comes from the same
:class:`~sammed3d.inference.InteractiveSession` users drive, and the atlas gives the Dice.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from sammed3d.io import Volume, atomic_write_text, read_volume, write_volume

logger = logging.getLogger(__name__)

#: Structures segmented by default: categories seen in training (on another brain) and
#: categories held out of training entirely (marked in ``HELD_OUT_CATEGORIES``).
DEFAULT_STRUCTURES = (
    "Hippocampus_L",
    "Thalamus_R",
    "Precentral_L",
    "Cerebelum_6_R",
    "Caudate_L",
    "Putamen_R",
)
#: Categories no training volume contained (see tools/build_demo_data.py).
HELD_OUT_CATEGORIES = ("Caudate", "Putamen", "Pallidum", "Amygdala")


@dataclass
class StructureResult:
    """Outcome for one structure."""

    name: str
    label: int
    click: tuple[int, int, int]
    dice: float
    voxels_predicted: int
    voxels_atlas: int
    seconds: float
    held_out_category: bool


@dataclass
class DemoResult:
    """Everything the demo produced."""

    structures: list[StructureResult]
    label_map: Path
    figure: Path
    summary: Path
    checkpoint: str
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def mean_dice(self) -> float:
        return float(np.mean([s.dice for s in self.structures])) if self.structures else 0.0


def demo_assets() -> tuple[Path, Path, dict[str, int]]:
    """Paths of the bundled demo image and atlas, and the atlas names."""
    root = resources.files("sammed3d") / "assets" / "demo"
    image = Path(str(root / "colin27_t1.nii.gz"))
    atlas = Path(str(root / "colin27_aal.nii.gz"))
    names_file = Path(str(root / "colin27_aal.json"))
    for p in (image, atlas, names_file):
        if not p.is_file():
            raise FileNotFoundError(f"bundled demo file missing (broken install?): {p}")
    names = {str(k): int(v) for k, v in json.loads(names_file.read_text(encoding="utf-8")).items()}
    return image, atlas, names


def interior_click(mask: np.ndarray, spacing: tuple[float, float, float]) -> tuple[int, int, int]:
    """The voxel deepest inside ``mask`` (largest distance to its boundary, in mm)."""
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(np.pad(mask, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    idx = np.unravel_index(int(np.argmax(dist)), mask.shape)
    return (int(idx[0]), int(idx[1]), int(idx[2]))


def run_demo(
    output_dir: str | Path = "sammed3d_demo",
    *,
    checkpoint: str | Path | None = None,
    structures: tuple[str, ...] | list[str] = DEFAULT_STRUCTURES,
    device: str = "cpu",
    allow_unsafe_pickle: bool = False,
    extend: bool = True,
) -> DemoResult:
    """Segment ``structures`` of the bundled MRI from one click each.

    Args:
        output_dir: Folder for ``demo_labels.nii.gz``, ``demo_overlay.png`` and
            ``demo_summary.json`` (created; existing files there are replaced atomically).
        checkpoint: Weights; default: ``$SAMMED3D_CHECKPOINT``, else the bundled model.
        structures: AAL structure names (see ``sammed3d/assets/demo/colin27_aal.json``).
        device: Torch device.
        allow_unsafe_pickle: For older published checkpoints (trusted files only).
        extend: Let masks grow beyond one ROI.

    Returns:
        A :class:`DemoResult`.

    Raises:
        ValueError: an unknown structure name.
        FileNotFoundError: no checkpoint given and none bundled.
    """
    from sammed3d.inference import InteractiveSession, SamMed3DPredictor
    from sammed3d.paths import require_checkpoint

    image_path, atlas_path, names = demo_assets()
    unknown = [s for s in structures if s not in names]
    if unknown:
        raise ValueError(
            f"unknown structure(s) {unknown}; choose from the AAL names, e.g. "
            f"{', '.join(list(names)[:6])}, ..."
        )
    if not structures:
        raise ValueError("no structures given")
    ckpt = require_checkpoint(checkpoint)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    predictor = SamMed3DPredictor.from_checkpoint(
        ckpt, device=device, allow_unsafe_pickle=allow_unsafe_pickle, extend=extend
    )
    session = InteractiveSession(predictor)
    image = read_volume(image_path)
    atlas = read_volume(atlas_path)
    session.set_image(image, modality="MR")
    logger.info("model %s loaded and image set in %.2f s", ckpt.name, time.perf_counter() - t0)

    results: list[StructureResult] = []
    for value, name in enumerate(structures, start=1):
        gt = atlas.array == names[name]
        click = interior_click(gt, image.spacing)
        session.new_object(value)
        t1 = time.perf_counter()
        mask = session.add_point(click, positive=True)
        elapsed = time.perf_counter() - t1
        inter = float(np.logical_and(mask, gt).sum())
        denom = float(mask.sum() + gt.sum())
        dice = 2 * inter / denom if denom else float("nan")
        res = StructureResult(
            name=name,
            label=value,
            click=click,
            dice=dice,
            voxels_predicted=int(mask.sum()),
            voxels_atlas=int(gt.sum()),
            seconds=elapsed,
            held_out_category=name.split("_")[0] in HELD_OUT_CATEGORIES,
        )
        results.append(res)
        logger.info("%-16s click %s  Dice %.3f  (%.2f s)", name, click, dice, elapsed)

    label_map = write_volume(
        image.with_array(session.label_map.astype(np.uint8)), out / "demo_labels.nii.gz"
    )
    figure = write_overlay(
        image, atlas, session.label_map, results, names, out / "demo_overlay.png"
    )
    summary = out / "demo_summary.json"
    payload = {
        "checkpoint": str(ckpt),
        "image": str(image_path),
        "structures": [asdict(r) for r in results],
        "mean_dice": float(np.mean([r.dice for r in results])),
        "label_map": str(label_map),
        "figure": str(figure),
        "label_values": {r.name: r.label for r in results},
    }
    atomic_write_text(summary, json.dumps(payload, indent=2))
    return DemoResult(results, label_map, figure, summary, str(ckpt))


def write_overlay(
    image: Volume,
    atlas: Volume,
    labels: np.ndarray,
    results: list[StructureResult],
    names: dict[str, int],
    path: Path,
) -> Path:
    """Three orthogonal slices per structure: prediction filled, atlas outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    n = len(results)
    colors = plt.get_cmap("tab10")(np.arange(10))
    fig, axes = plt.subplots(n, 3, figsize=(9, 3 * n), squeeze=False)
    img = image.array.astype(np.float32)
    vmax = float(np.percentile(img, 99.5)) or 1.0
    for row, res in enumerate(results):
        color = colors[(res.label - 1) % 10]
        gt = atlas.array == names[res.name]
        pred = labels == res.label
        i, j, k = res.click
        views = [
            (img[i, :, :], pred[i, :, :], gt[i, :, :], (j, k), "sagittal"),
            (img[:, j, :], pred[:, j, :], gt[:, j, :], (i, k), "coronal"),
            (img[:, :, k], pred[:, :, k], gt[:, :, k], (i, j), "axial"),
        ]
        for col, (sl, p, g, xy, title) in enumerate(views):
            ax = axes[row, col]
            ax.imshow(sl.T, cmap="gray", origin="lower", vmin=0, vmax=vmax)
            ax.imshow(
                np.ma.masked_where(~p.T, p.T), cmap=ListedColormap([color]), alpha=0.45,
                origin="lower",
            )  # fmt: skip
            if g.any():
                ax.contour(g.T.astype(float), levels=[0.5], colors="white", linewidths=0.8)
            ax.plot(*xy, marker="+", color="yellow", markersize=9, mew=1.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                tag = " (held-out category)" if res.held_out_category else ""
                ax.set_ylabel(f"{res.name}{tag}\nDice {res.dice:.2f}", fontsize=9)
            if row == 0:
                ax.set_title(title, fontsize=10)
    fig.suptitle("sammed3d demo: one click each (filled: prediction, white: atlas)", fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)
    return path
