"""What zoom-in costs: first and refinement clicks on a small object, zoom-in on vs off.

Run: ``.venv/bin/python benchmarks/bench_zoom.py [--threads 2] [--repeat 5]``.

The bundled default model (``zoom_spacing`` 1.0 mm) on a synthetic 1 mm head-sized volume
(181 x 217 x 181, noise and a soft "brain") with a bright ball of radius 6 mm: its first mask
is small, so the click is predicted again in a 1.0 mm ROI (one more ROI resample, encoder
pass and three-mask decode). Both settings run in the same process on the same volume; the
report gives each median and their ratio (issue 10's targets for this model: first click
<= 0.5 s, refinement click <= 50 ms).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch


def _volume() -> tuple[np.ndarray, tuple[int, int, int]]:
    rng = np.random.default_rng(0)
    shape = (181, 217, 181)
    grid = np.indices(shape, dtype=np.float32)
    centre = np.array(shape, dtype=np.float32)[:, None, None, None] / 2
    head = (((grid - centre) / (np.array(shape)[:, None, None, None] * 0.42)) ** 2).sum(0) <= 1
    ball_at = (100, 120, 90)
    ball = ((grid - np.array(ball_at, dtype=np.float32)[:, None, None, None]) ** 2).sum(0) <= 36
    img = np.where(head, 300.0, 0.0) + np.where(ball, 250.0, 0.0) + rng.normal(0, 20, shape)
    return img.clip(0).astype(np.float32), ball_at


def parse_args(argv: list[str] | None, description: str) -> argparse.Namespace:
    """``--threads`` and ``--repeat`` (both >= 1, else a usage error); sets torch's threads and
    prints them with the load average (shared with ``bench_extents.py``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5, help="first clicks, each on a fresh image")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.threads < 1:
        parser.error(f"--repeat and --threads must be >= 1, got {args.repeat}, {args.threads}")
    torch.set_num_threads(args.threads)
    print(f"threads {torch.get_num_threads()}; load average before {os.getloadavg()[0]:.2f}")
    return args


def bundled_predictor(**kwargs: object):  # noqa: ANN201 - SamMed3DPredictor (lazy import)
    """The bundled default model with its encoder warmed up, as at application start."""
    from sammed3d.inference import SamMed3DPredictor

    predictor = SamMed3DPredictor.from_checkpoint(None, **kwargs)
    with torch.inference_mode():
        s = predictor.model.img_size
        predictor.model.encode(torch.zeros(1, 1, s, s, s))
    return predictor


def timed_first_click(predictor, volume, click):  # noqa: ANN001, ANN201 (lazy imports)
    """A fresh session on ``volume`` (no cached embedding) and its first click at ``click``:
    ``(session, seconds)`` (shared with ``bench_extents.py`` and ``bench_refine.py``)."""
    from sammed3d.inference import InteractiveSession

    session = InteractiveSession(predictor)
    session.set_image(volume)
    t0 = time.perf_counter()
    session.add_click(click)
    return session, time.perf_counter() - t0


def timed_refinements(session, click, rois=None) -> list[float]:  # noqa: ANN001
    """Seconds of three refinement clicks next to ``click``: positive, negative, positive.

    ``rois``: if given, ``rois[n]`` gets the number of ROIs the object spans after click
    ``n + 1`` (one list per click but the last)."""
    out = []
    for d in (1, 2, 3):
        t0 = time.perf_counter()
        session.add_click((click[0] + d, click[1], click[2]), positive=d != 2)
        out.append(time.perf_counter() - t0)
        if rois is not None and d <= len(rois):
            rois[d - 1].append(len(session.tiles))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, __doc__.splitlines()[0])

    from sammed3d.io import Volume

    array, click = _volume()
    volume = Volume(array, (1.0, 1.0, 1.0))
    medians = {}
    for zoom in (0.0, None):  # off, then the checkpoint's (1.0 mm)
        predictor = bundled_predictor(zoom_spacing=zoom)
        firsts, refines, zoomed = [], [], []
        for _ in range(args.repeat):
            session, seconds = timed_first_click(predictor, volume, click)
            firsts.append(seconds)
            zoomed.append(predictor.is_zoomed(session.tiles[0]))
            refines += timed_refinements(session, click)
        name = f"zoom-in {predictor.zoom_spacing:g} mm" if predictor.zoom_spacing else "no zoom"
        medians[name] = (statistics.median(firsts), statistics.median(refines))
        print(
            f"{name}: first click median {medians[name][0]:.3f} s (min {min(firsts):.3f}), "
            f"refinement median {1000 * medians[name][1]:.0f} ms over {len(refines)}; "
            f"zoomed {sum(zoomed)}/{len(zoomed)}"
        )
    (a_first, a_ref), (b_first, b_ref) = medians.values()
    print(f"ratio zoom / no zoom: first click {b_first / a_first:.2f}x, refinement "
          f"{b_ref / a_ref:.2f}x; load average after {os.getloadavg()[0]:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
