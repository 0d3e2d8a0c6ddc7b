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

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_zoom import (  # noqa: E402  (same volume)
    _volume,
    bundled_predictor,
    parse_args,
    timed_first_click,
)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, __doc__.splitlines()[0])

    from sammed3d.io import Volume

    array, click = _volume()
    volume = Volume(array, (1.0, 1.0, 1.0))
    predictor = bundled_predictor()
    firsts, listings, takes, refines, counts = [], [], [], [], []
    for _ in range(args.repeat):
        session, seconds = timed_first_click(predictor, volume, click)
        firsts.append(seconds)
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
