"""The bundled demonstration: visible brain structures of a held-out MRI, a few clicks each.

The demo volume is the Colin27 T1 MRI (``sammed3d/assets/demo``, see its NOTICE), which the
bundled model never saw in training, with three structures a person can see on it and that
were derived from the scan itself (``tools/build_demo_data.py``): the whole brain, the white
matter and the lateral ventricles. For each structure the demo acts like a user: the first
click goes to the structure's most interior voxel, each further click to the centre of the
largest remaining error (positive in a missed part, negative in a wrong part: the RITM rule of
:func:`sammed3d.clicks.sample_next_click`). The masks come from the same
:class:`~sammed3d.inference.InteractiveSession` users drive; the reference masks give Dice.
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
from sammed3d.logs import held_messages, release

logger = logging.getLogger(__name__)

#: Structures segmented by default, in this order (later ones are drawn on top).
DEFAULT_STRUCTURES = ("whole_brain", "white_matter", "lateral_ventricles")
#: Clicks per structure by default.
DEFAULT_CLICKS = 5
#: Written into ``demo_summary.json``: a folder holding it may be refreshed by the demo.
WRITTEN_BY = "sammed3d demo"


@dataclass
class StructureResult:
    """Outcome for one structure.

    Args:
        name: Structure name.
        label: Its value in the label map.
        clicks: ``(i, j, k, positive)`` per click, native voxel indices.
        dice: Dice after each click.
        first_click_in_mask: Whether the first click's voxel is in the mask it produced.
        voxels_predicted / voxels_reference: After the last click / of the reference.
        seconds: Time per click.
        extents: ``{"volume_ml", "dice", "picked"}`` of every mask the first click could
            get (:meth:`InteractiveSession.extents`, smallest first; ``picked``: the click's
            pick, the model's own or the one a first-click rule took instead; empty for a
            model with one mask per click). The clicks after the first refine the pick.
    """

    name: str
    label: int
    clicks: list[tuple[int, int, int, bool]]
    dice: list[float]
    first_click_in_mask: bool
    voxels_predicted: int
    voxels_reference: int
    seconds: list[float]
    extents: list[dict[str, float | bool]] = field(default_factory=list)


@dataclass
class DemoResult:
    """Everything the demo produced."""

    structures: list[StructureResult]
    label_map: Path
    figure: Path
    summary: Path
    checkpoint: str
    extra: dict[str, object] = field(default_factory=dict)
    #: The MRI the label map belongs to (open both in a viewer).
    image: Path | None = None

    def mean_dice(self, click: int = -1) -> float:
        """Mean Dice over structures after click ``click`` (0-based; -1: the last)."""
        if not self.structures:
            return 0.0
        return float(np.mean([s.dice[click] for s in self.structures]))


def demo_assets() -> tuple[Path, Path, dict[str, list[int]]]:
    """Paths of the bundled demo image and structure map, and each structure's label values."""
    root = resources.files("sammed3d") / "assets" / "demo"
    image = Path(str(root / "colin27_t1.nii.gz"))
    labels = Path(str(root / "colin27_structures.nii.gz"))
    names_file = Path(str(root / "colin27_structures.json"))
    for p in (image, labels, names_file):
        if not p.is_file():
            raise FileNotFoundError(f"bundled demo file missing (broken install?): {p}")
    raw = json.loads(names_file.read_text(encoding="utf-8"))
    names = {str(k): [int(x) for x in v] for k, v in raw.items()}
    return image, labels, names


def interior_click(mask: np.ndarray, spacing: tuple[float, float, float]) -> tuple[int, int, int]:
    """The voxel deepest inside ``mask`` (largest distance to its boundary, in mm)."""
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(np.pad(mask, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    idx = np.unravel_index(int(np.argmax(dist)), mask.shape)
    return (int(idx[0]), int(idx[1]), int(idx[2]))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    denom = float(a.sum() + b.sum())
    return 2.0 * float(np.logical_and(a, b).sum()) / denom if denom else float("nan")


def run_demo(
    output_dir: str | Path = "sammed3d_demo",
    *,
    checkpoint: str | Path | None = None,
    structures: tuple[str, ...] | list[str] = DEFAULT_STRUCTURES,
    clicks: int = DEFAULT_CLICKS,
    device: str = "cpu",
    allow_unsafe_pickle: bool = False,
    extend: bool = True,
    max_rois: int = 8,
) -> DemoResult:
    """Segment ``structures`` of the bundled MRI with ``clicks`` simulated clicks each.

    Args:
        output_dir: Folder for ``demo_labels.nii.gz``, ``demo_overlay.png`` and
            ``demo_summary.json`` (created; existing files there are replaced atomically).
        checkpoint: Weights (a file or a published name); default: ``$SAMMED3D_CHECKPOINT``,
            else the bundled model.
        structures: Names from ``sammed3d/assets/demo/colin27_structures.json``.
        clicks: Clicks per structure (>= 1).
        device: Torch device.
        allow_unsafe_pickle: For older published checkpoints (trusted files only).
        extend: Let masks grow beyond one ROI.
        max_rois: Bound on the ROIs of one structure (>= 1).

    Returns:
        A :class:`DemoResult`.

    Raises:
        ValueError: an unknown structure name, no structures, ``clicks < 1``,
            ``max_rois < 1``.
        FileNotFoundError: no checkpoint given and none bundled.
    """
    from sammed3d.clicks import sample_next_click
    from sammed3d.evaluation.methods import extent_dice
    from sammed3d.inference import InteractiveSession, SamMed3DPredictor

    image_path, labels_path, names = demo_assets()
    unknown = [s for s in structures if s not in names]
    if unknown:
        raise ValueError(f"unknown structure(s) {unknown}; choose from {', '.join(names)}")
    if not structures:
        raise ValueError("no structures given")
    if clicks < 1:
        raise ValueError(f"clicks must be >= 1, got {clicks}")
    t0 = time.perf_counter()
    predictor = SamMed3DPredictor.from_checkpoint(  # resolves the checkpoint (once)
        checkpoint,
        device=device,
        allow_unsafe_pickle=allow_unsafe_pickle,
        extend=extend,
        max_rois=max_rois,
    )
    ckpt = predictor.checkpoint
    assert ckpt is not None
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    session = InteractiveSession(predictor)
    image = read_volume(image_path)
    reference = read_volume(labels_path)
    session.set_image(image, modality="MR")
    logger.info("model %s loaded and image set in %.2f s", ckpt.name, time.perf_counter() - t0)

    results: list[StructureResult] = []
    for value, name in enumerate(structures, start=1):
        # ties between equally central error voxels are broken by a generator of its own per
        # structure, so a structure's clicks do not depend on the other structures or --clicks
        rng = np.random.default_rng(sorted(names).index(name))
        gt = np.isin(reference.array, names[name])
        session.new_object(value)
        done: list[tuple[int, int, int, bool]] = []
        dices: list[float] = []
        seconds: list[float] = []
        mask = np.zeros(gt.shape, dtype=bool)
        first_in_mask = False
        extents: list[dict[str, float | bool]] = []
        for n in range(clicks):
            if n == 0:
                coord, positive = interior_click(gt, image.spacing), True
            else:
                click = sample_next_click(mask, gt, strategy="center", rng=rng)
                coord, positive = click.coord, click.positive
            t1 = time.perf_counter()
            with held_messages() as held:  # logged under the click's line
                mask = session.add_point(coord, positive=positive)
            seconds.append(time.perf_counter() - t1)
            if n == 0:
                first_in_mask = bool(mask[coord])
                if predictor.offers_extents():
                    extents = [
                        {k: e[k] for k in ("volume_ml", "dice", "picked")}
                        for e in extent_dice(session, gt)
                    ]
            done.append((*coord, positive))
            dices.append(dice(mask, gt))
            logger.info(
                "%-18s click %d %s %s  Dice %.3f  (%.2f s)",
                name, n + 1, "+" if positive else "-", coord, dices[-1], seconds[-1],
            )  # fmt: skip
            release(held)
        results.append(
            StructureResult(
                name=name,
                label=value,
                clicks=done,
                dice=dices,
                first_click_in_mask=first_in_mask,
                voxels_predicted=int(mask.sum()),
                voxels_reference=int(gt.sum()),
                seconds=seconds,
                extents=extents,
            )
        )

    label_map = session.label_map
    written = write_volume(
        image.with_array(label_map.astype(np.uint8)), out / "demo_labels.nii.gz", overwrite=True
    )
    figure = write_overlay(image, reference, names, session, results, out / "demo_overlay.png")
    summary = out / "demo_summary.json"
    payload = {
        "written_by": WRITTEN_BY,
        "checkpoint": str(ckpt),
        "image": str(image_path),
        "clicks_per_structure": clicks,
        "structures": [asdict(r) for r in results],
        "mean_dice_per_click": [
            float(np.mean([r.dice[n] for r in results])) for n in range(clicks)
        ],
        "label_map": str(written),
        "figure": str(figure),
        "label_values": {r.name: r.label for r in results},
    }
    atomic_write_text(summary, json.dumps(payload, indent=2))
    return DemoResult(results, written, figure, summary, str(ckpt), image=Path(image_path))


def write_overlay(
    image: Volume,
    reference: Volume,
    names: dict[str, list[int]],
    session: object,
    results: list[StructureResult],
    path: Path,
) -> Path:
    """Three orthogonal slices through each structure's first click: the final mask filled,
    the reference outlined in white, clicks marked (+ green, - red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    n = len(results)
    colors = plt.get_cmap("tab10")(np.arange(10))
    fig, axes = plt.subplots(n, 3, figsize=(9.5, 3.2 * n), squeeze=False)
    img = image.array.astype(np.float32)
    vmax = float(np.percentile(img, 99.5)) or 1.0
    for row, res in enumerate(results):
        color = colors[(res.label - 1) % 10]
        gt = np.isin(reference.array, names[res.name])
        pred = session.object_mask(res.label)  # type: ignore[attr-defined]
        first = res.clicks[0][:3]
        views = [((1, 2), "sagittal", 0), ((0, 2), "coronal", 1), ((0, 1), "axial", 2)]
        for col, (axes_xy, title, fixed) in enumerate(views):

            def cut(a: np.ndarray, axis: int = fixed, at: int = first[fixed]) -> np.ndarray:
                return np.take(a, at, axis=axis)

            ax = axes[row, col]
            ax.imshow(cut(img).T, cmap="gray", origin="lower", vmin=0, vmax=vmax)
            p = cut(pred)
            ax.imshow(
                np.ma.masked_where(~p.T, p.T), cmap=ListedColormap([color]), alpha=0.45,
                origin="lower",
            )  # fmt: skip
            g = cut(gt)
            if g.any():
                ax.contour(g.T.astype(float), levels=[0.5], colors="white", linewidths=0.7)
            for c in res.clicks:
                if abs(c[fixed] - res.clicks[0][fixed]) <= 2:  # clicks near this slice
                    ax.plot(
                        c[axes_xy[0]], c[axes_xy[1]], marker="+" if c[3] else "x",
                        color="lime" if c[3] else "red", markersize=9, mew=1.8,
                    )  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                trail = " → ".join(f"{d:.2f}" for d in res.dice)
                ax.set_ylabel(f"{res.name}\nDice {trail}", fontsize=9)
            if row == 0:
                ax.set_title(title, fontsize=10)
    fig.suptitle(
        "sammed3d demo (held-out MRI): filled = prediction after the last click, "
        "white = reference, + / x = clicks",
        fontsize=9,
    )
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)
    return path
