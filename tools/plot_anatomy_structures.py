"""Draw the named structures of a training anatomy file on three planes (a check by eye).

Reads the ``.npz`` written by ``tools/build_demo_data.py`` (``image``, ``structures`` bit map,
``structure_names``) and writes a PNG with an axial, a sagittal and a coronal slice through the
centre of the last structure present (the lateral ventricles), each structure outlined in its
own colour.

Usage::

    .venv/bin/python tools/plot_anatomy_structures.py data/model/train/anatomy_mni152.npz \\
        docs/images/mni152_training_structures.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

COLOURS = ("gold", "cyan", "red", "lime", "magenta")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("anatomy", type=Path, help="anatomy .npz with a structures map")
    parser.add_argument("out", type=Path, help="PNG to write")
    args = parser.parse_args(argv)
    try:
        with np.load(args.anatomy) as data:
            files = set(data.files)
            if "structures" not in files or "image" not in files:
                return _fail(
                    f"{args.anatomy} has no 'image' and 'structures' maps; rebuild it with "
                    "tools/build_demo_data.py"
                )
            image, bits = data["image"], data["structures"]
            names = [str(n) for n in data["structure_names"]] if "structure_names" in files else []
    except OSError as exc:
        return _fail(f"cannot read {args.anatomy}: {exc.strerror or exc}")
    except ValueError:
        return _fail(f"{args.anatomy} is not an .npz file (image, structures arrays)")
    if image.ndim != 3 or bits.shape != image.shape:
        return _fail(
            f"{args.anatomy}: image and structures must be 3-D of one shape, "
            f"got {image.shape} and {bits.shape}"
        )
    present = [b for b in range(8) if (bits & (1 << b)).any()]
    if not present:
        return _fail(f"{args.anatomy}: the structures map is empty")
    names += [f"structure {b}" for b in range(len(names), max(present) + 1)]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    last = (bits >> present[-1]) & 1
    centre = np.argwhere(last).mean(0).astype(int)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    planes = [
        ("axial", image[:, :, centre[2]], bits[:, :, centre[2]]),
        ("sagittal", image[centre[0], :, :], bits[centre[0], :, :]),
        ("coronal", image[:, centre[1], :], bits[:, centre[1], :]),
    ]
    for ax, (title, img, lab) in zip(axes, planes, strict=True):
        ax.imshow(img.T, cmap="gray", origin="lower")
        for bit, name in enumerate(names):
            part = ((lab >> bit) & 1).T
            if part.any():
                ax.contour(part, [0.5], colors=COLOURS[bit % len(COLOURS)], linewidths=0.8)
            ax.plot([], [], color=COLOURS[bit % len(COLOURS)], label=name.replace("_", " "))
        ax.set_title(title)
        ax.axis("off")
    axes[0].legend(loc="lower left", fontsize=8, framealpha=0.8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".part")
    fig.savefig(tmp, dpi=80, format="png")
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
