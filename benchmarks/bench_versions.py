"""The bundled model's clicks on this checkout against another checkout, in alternating processes.

Run: ``.venv/bin/python benchmarks/bench_versions.py BASELINE_SRC [--pairs 6] [--threads 2]
[--repeat 10]``, with ``BASELINE_SRC`` the ``src`` folder of another checkout, e.g. after
``git worktree add /tmp/base <ref>``: ``/tmp/base/src``.

Each pair runs two processes, one importing ``sammed3d`` from ``BASELINE_SRC`` and one from
this checkout, one after the other (the baseline first); each times ``--repeat`` fresh first
clicks, each followed by three refinement clicks (positive, negative, positive), on the
volume and clicks of ``bench_zoom.py`` / ``bench_refine.py``: the ball (a small object,
zoomed in) and the "brain" (2.2 M voxels over several ROIs). Alternating the processes spreads
the machine's load over both versions alike; on a shared 2-core machine a single run of
either can be 30 % off. The report gives, per object and click, the median over the pairs of
each process's median, the range, and the ratio this / baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
THIS_SRC = HERE.parent / "src"
OBJECTS = ("ball", "brain")
CLICKS = ("first click", "refinement 1", "refinement 2", "refinement 3")


def worker(what: str, repeat: int, threads: int) -> None:
    """Time the clicks in this process and print them as one JSON line."""
    import torch

    sys.path.insert(0, str(HERE))
    from bench_refine import BRAIN_CLICK
    from bench_zoom import _volume, bundled_predictor, timed_first_click, timed_refinements

    import sammed3d
    from sammed3d.io import Volume

    torch.set_num_threads(threads)
    array, ball = _volume()
    volume = Volume(array, (1.0, 1.0, 1.0))
    predictor = bundled_predictor()
    click = ball if what == "ball" else BRAIN_CLICK
    timed_first_click(predictor, volume, click)  # warm-up
    times: list[list[float]] = [[] for _ in CLICKS]
    for _ in range(repeat):
        session, seconds = timed_first_click(predictor, volume, click)
        for n, t in enumerate([seconds, *timed_refinements(session, click)]):
            times[n].append(t)
    medians = [statistics.median(t) for t in times]
    print(json.dumps({"package": str(Path(sammed3d.__file__).parent), "medians": medians}))


def run_worker(src: Path, what: str, repeat: int, threads: int) -> list[float]:
    """One worker process importing ``sammed3d`` from ``src``; its click medians (s)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    args = ["--worker", what, "--repeat", str(repeat), "--threads", str(threads)]
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise SystemExit(f"the worker on {src} failed: {tail[0]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if Path(result["package"]).resolve() != (src / "sammed3d").resolve():
        raise SystemExit(f"the worker for {src} imported sammed3d from {result['package']}")
    return [float(v) for v in result["medians"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path, nargs="?", help="src folder of the other checkout")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=10, help="first clicks per process")
    parser.add_argument("--worker", choices=OBJECTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.pairs, args.threads, args.repeat) < 1:
        parser.error(
            f"--pairs, --threads and --repeat must be >= 1, got {args.pairs}, {args.threads}, "
            f"{args.repeat}"
        )
    if args.worker:
        worker(args.worker, args.repeat, args.threads)
        return 0
    if args.baseline is None:
        parser.error("give the src folder of the checkout to compare with (BASELINE_SRC)")
    if not (args.baseline / "sammed3d" / "__init__.py").is_file():
        parser.error(f"{args.baseline} is not a src folder holding the sammed3d package")
    print(
        f"threads {args.threads}, {args.pairs} pair(s) of processes, {args.repeat} first "
        f"click(s) each; load average before {os.getloadavg()[0]:.2f}"
    )
    results: dict[str, dict[str, list[list[float]]]] = {
        what: {"baseline": [], "this": []} for what in OBJECTS
    }
    for _ in range(args.pairs):
        for what in OBJECTS:
            for side, src in (("baseline", args.baseline), ("this", THIS_SRC)):
                results[what][side].append(run_worker(src, what, args.repeat, args.threads))
    for what in OBJECTS:
        for n, name in enumerate(CLICKS):
            base = [r[n] for r in results[what]["baseline"]]
            this = [r[n] for r in results[what]["this"]]
            mb, mt = statistics.median(base), statistics.median(this)
            print(
                f"{what}, {name}: baseline {1000 * mb:.0f} ms ({1000 * min(base):.0f}-"
                f"{1000 * max(base):.0f}), this {1000 * mt:.0f} ms ({1000 * min(this):.0f}-"
                f"{1000 * max(this):.0f}), ratio this / baseline {mt / mb:.2f}x"
            )
    print(f"load average after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
