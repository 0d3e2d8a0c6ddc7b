"""What the first click's other extents cost: listing them and taking one, against the first
click itself.

Run: ``.venv/bin/python benchmarks/bench_extents.py [--threads 2] [--repeat 5]``.

The bundled default model on the volume of ``bench_zoom.py`` (181 x 217 x 181 at 1 mm, a
6 mm ball in a soft "brain"), clicked in the ball: per repeat a fresh session gets the first
click (the baseline, measured in the same run), then ``InteractiveSession.extents()`` lists
the masks that click could get (the first call decodes them: one more encoder pass when the
object was not zoomed), then every extent is taken once with ``choose_extent`` (what `E` does
in the web page; a large mask grows into more ROIs) and one refinement click follows. Reports
medians and the listing's cost relative to the first click.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_zoom import _volume  # noqa: E402  (the same synthetic volume)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5, help="first clicks (fresh sessions)")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.threads < 1:
        parser.error(f"--repeat and --threads must be >= 1, got {args.repeat}, {args.threads}")

    from sammed3d.inference import InteractiveSession, SamMed3DPredictor
    from sammed3d.io import Volume

    torch.set_num_threads(args.threads)
    array, click = _volume()
    volume = Volume(array, (1.0, 1.0, 1.0))
    print(f"threads {torch.get_num_threads()}; load average before {os.getloadavg()[0]:.2f}")
    predictor = SamMed3DPredictor.from_checkpoint(None)
    with torch.inference_mode():  # warm-up, as at application start
        s = predictor.model.img_size
        predictor.model.encode(torch.zeros(1, 1, s, s, s))
    firsts, listings, takes, refines, counts = [], [], [], [], []
    for _ in range(args.repeat):
        session = InteractiveSession(predictor)
        session.set_image(volume)  # a fresh image: no cached embedding
        t0 = time.perf_counter()
        session.add_click(click)
        firsts.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        found = session.extents()
        listings.append(time.perf_counter() - t0)
        counts.append(len(found))
        for extent in found:
            t0 = time.perf_counter()
            session.choose_extent(extent.index)
            takes.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        session.add_click((click[0] + 1, click[1], click[2]))
        refines.append(time.perf_counter() - t0)
    first, listing = statistics.median(firsts), statistics.median(listings)
    refine = 1000 * statistics.median(refines)
    print(
        f"first click median {first:.3f} s; extents() median {listing:.3f} s "
        f"({len(found)} masks, {min(counts)}-{max(counts)} over repeats); choose_extent median "
        f"{1000 * statistics.median(takes):.0f} ms (max {1000 * max(takes):.0f} ms over "
        f"{len(takes)}); refinement after a choice median {refine:.0f} ms"
    )
    print(f"ratio extents() / first click {listing / first:.2f}x; "
          f"load average after {os.getloadavg()[0]:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
