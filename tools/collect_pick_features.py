#!/usr/bin/env python
"""First clicks on tuning data, with the features and Dice of every mask the click could get:
the table ``tools/fit_first_pick.py`` fits the learned pick's weights on
(``tools/pick_features.py``).

For each target (a label of a case of an nnU-Net style test set, or a generated crop of seed
``--generated-start`` + n, never drawn by training or by the held-out set) it draws
``--clicks`` first clicks uniform in the target, gives each to a fresh object of the bundled
model's session with ``first_pick="model"`` and writes, for every extent the click could get
(the model's own mask first), ``FEATURES`` of ``tools/pick_features.py`` and the Dice of
the object's mask with that extent taken (boundary refinement applied as in use).

    .venv/bin/python tools/collect_pick_features.py OUT.npz [--data DIR ...] [--clicks K]
        [--generated N] [--checkpoint default] [--seed S]

Never point ``--data`` at the held-out sets (``data/model/eval``).
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from pick_features import FEATURES, extent_features

from sammed3d.clicks import Click
from sammed3d.evaluation.methods import RegionGrowing
from sammed3d.evaluation.metrics import dice
from sammed3d.inference.predictor import SamMed3DPredictor
from sammed3d.inference.session import InteractiveSession, _ObjectState
from sammed3d.io import Volume, read_volume


def targets_of(data: Path):
    """``(name, image Volume, {label value: bool mask})`` per case of an nnU-Net test set."""
    for image_path in sorted((data / "imagesTs").glob("*_0000.nii.gz")):
        case = image_path.name[: -len("_0000.nii.gz")]
        image = read_volume(image_path)
        label = read_volume(data / "labelsTs" / f"{case}.nii.gz").array
        values = [int(v) for v in np.unique(label) if v != 0]
        yield f"{data.name}/{case}", image, {v: label == v for v in values}


def generated(start: int, n: int):
    """``(name, image Volume, {1: target})`` of generated crops ``start`` .. ``start + n - 1``
    at 1.5 mm (``SyntheticGenerator.sample_raw``, as the held-out set is written)."""
    from sammed3d.training.synthesis import SyntheticGenerator

    gen = SyntheticGenerator()
    for seed in range(start, start + n):
        image, label = gen.sample_raw(seed, 1)
        vol = Volume(image.numpy().astype(np.float32), (1.5, 1.5, 1.5))
        yield f"generated/{seed}", vol, {1: label[0].numpy().astype(bool)}


def _block(mask: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray]:
    """A full native mask as ``(slices, block)`` on its bounding box (a voxel for an empty one)."""
    hit = np.argwhere(mask)
    if not hit.size:
        return (slice(0, 1),) * 3, np.zeros((1, 1, 1), dtype=bool)
    slices = tuple(slice(int(a), int(b) + 1) for a, b in zip(hit.min(0), hit.max(0), strict=True))
    return slices, mask[slices]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--data", type=Path, nargs="*", default=[])
    parser.add_argument("--clicks", type=int, default=2)
    parser.add_argument("--generated", type=int, default=0)
    parser.add_argument("--generated-start", type=int, default=40_000)
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--with-region-growing",
        action="store_true",
        help="also score the region-growing baseline's mask of the click, as the last mask",
    )
    args = parser.parse_args()
    if any("eval" in p.parts for p in args.data):
        parser.error("--data must not be a held-out set (data/model/eval)")
    missing = [str(p) for p in args.data if not (p / "dataset.json").is_file()]
    if missing:
        parser.error(f"--data needs nnU-Net style sets with a dataset.json, got {missing}")
    if args.clicks < 1 or args.generated < 0:
        parser.error(
            f"--clicks must be >= 1 and --generated >= 0, got {args.clicks} and {args.generated}"
        )
    if not args.data and not args.generated:
        parser.error("nothing to collect: give --data sets and/or --generated N")
    torch.set_num_threads(1)
    pred = SamMed3DPredictor.from_checkpoint(args.checkpoint, first_pick="model")
    session = InteractiveSession(pred)
    rows: dict[str, list] = {
        k: [] for k in ("group", "features", "dice", "source", "voxels", "grown")
    }
    grower = RegionGrowing() if args.with_region_growing else None
    meta: list[str] = []
    sources = [targets_of(d) for d in args.data]
    if args.generated:
        sources.append(generated(args.generated_start, args.generated))
    group = 0
    t0 = time.time()
    for source in sources:
        for name, image, targets in source:
            session.set_image(image, modality="MR")
            if grower is not None:
                grower.set_image(image, modality="MR")
            arr = session.predictor.require_image().array
            spacing = session.predictor.volume.spacing
            for value, target in targets.items():
                where = np.argwhere(target)
                rng = np.random.default_rng([args.seed, value, zlib.crc32(name.encode())])
                n = min(args.clicks, len(where))  # a target of fewer voxels: each once
                for click in where[rng.choice(len(where), size=n, replace=False)]:
                    session.reset()
                    session.add_click(tuple(int(c) for c in click))
                    label = session.current_label
                    assert label is not None
                    obj = session._objects[label]
                    state = obj.state
                    candidates, masks, levels, scores = session._first_click_candidates(obj)
                    f = extent_features(arr, masks, click, spacing, scores, levels)
                    ds = [dice(session.object_mask(label), target)]
                    for tiles in candidates:
                        after = _ObjectState(state.clicks, tiles, state.roi, 0, tiles[0])
                        session._set_state(label, after)
                        ds.append(dice(session.object_mask(label), target))
                    session._set_state(label, state)
                    scores, levels = list(scores), list(levels)
                    if grower is not None:
                        grower.start_target()
                        grown = np.asarray(grower.add_click(Click(tuple(map(int, click)), True)))
                        masks = [*masks, _block(grown)]
                        scores.append(float("nan"))
                        levels.append(0)
                        f = extent_features(arr, masks, click, spacing, scores, levels)
                        ds.append(dice(grown, target))
                    for n in range(len(masks)):
                        rows["group"].append(group)
                        rows["features"].append(f[n])
                        rows["dice"].append(ds[n])
                        rows["source"].append(name.split("/")[0])
                        rows["voxels"].append(int(np.count_nonzero(masks[n][1])))
                        rows["grown"].append(grower is not None and n == len(masks) - 1)
                    meta.append(f"{name}:{value}:{tuple(int(c) for c in click)}")
                    group += 1
                    print(
                        f"{time.time() - t0:7.0f}s {name} label {value}: {len(masks)} masks, "
                        f"Dice " + " ".join(f"{d:.2f}" for d in ds),
                        flush=True,
                    )
            tmp = args.out.with_suffix(".tmp.npz")
            np.savez(
                tmp,
                group=np.asarray(rows["group"]),
                features=np.asarray(rows["features"]).reshape(-1, len(FEATURES)),
                dice=np.asarray(rows["dice"]),
                source=np.asarray(rows["source"]),
                voxels=np.asarray(rows["voxels"]),
                grown=np.asarray(rows["grown"], dtype=bool),
                clicks=np.asarray(meta),
                names=np.asarray(FEATURES),
            )
            tmp.replace(args.out)
    print(f"wrote {group} clicks to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
