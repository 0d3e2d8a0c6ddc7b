"""Start-up time of the command line: ``--help``, ``info``, ``prepare --help``.

Run: ``.venv/bin/python benchmarks/bench_startup.py [--repeat 7] [--check]``.

Every command runs as a fresh ``python -m sammed3d ...`` process (wall time of the whole
process, median and min over ``--repeat`` runs). Two baselines are measured in the same run:
``python -c pass`` (interpreter start) and the eager import the package root did before it
became lazy (``import sammed3d.build, sammed3d.inference``, which loads torch). The target
is a median under 1 s per command (issue 13); ``--check`` exits 1 when one is over it. A last
pass reports which heavy modules each command imported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

TARGET_S = 1.0

COMMANDS: dict[str, list[str]] = {
    "sammed3d --help": ["--help"],
    "sammed3d info": ["info"],
    "sammed3d prepare --help": ["prepare", "--help"],
}

BASELINES: dict[str, list[str]] = {
    "python -c pass": ["-c", "pass"],
    "eager import (old root)": ["-c", "import sammed3d.build, sammed3d.inference"],
}

HEAVY = ("torch", "numpy", "scipy", "SimpleITK", "nibabel", "monai", "matplotlib")

# Runs the CLI in-process and reports which heavy modules got imported.
_PROBE = """
import json, sys
from sammed3d.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
print(json.dumps([m for m in {heavy!r} if m in sys.modules]), file=sys.stderr)
"""


def _time_process(args: list[str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return times


def _heavy_imports(argv: list[str]) -> list[str]:
    code = _PROBE.format(argv=argv, heavy=HEAVY)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        check=True,
        encoding="utf-8",
        errors="replace",
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )
    return json.loads(proc.stderr.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="runs per command (default: 7)")
    parser.add_argument("--check", action="store_true", help=f"exit 1 if a median >= {TARGET_S} s")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")

    print(f"python {sys.version.split()[0]} ({sys.executable}), {args.repeat} runs each")
    medians: dict[str, float] = {}
    rows = [(n, a) for n, a in BASELINES.items()]
    rows += [(n, ["-m", "sammed3d", *a]) for n, a in COMMANDS.items()]
    for name, proc_args in rows:
        _time_process(proc_args, 1)  # warm the file cache
        times = _time_process(proc_args, args.repeat)
        medians[name] = statistics.median(times)
        print(f"  {name:<26} median {medians[name]:6.3f} s   min {min(times):6.3f} s")

    base, eager = medians["python -c pass"], medians["eager import (old root)"]
    print(f"\n{'command':<26} {'median':>8} {'x python':>9} {'/ eager':>8}  heavy imports")
    over = []
    for name, cli_args in COMMANDS.items():
        med = medians[name]
        heavy = _heavy_imports(cli_args)
        print(
            f"{name:<26} {med:7.3f}s {med / base:8.1f}x {med / eager:8.2f}  "
            f"{', '.join(heavy) or '-'}"
        )
        if med >= TARGET_S:
            over.append(name)
    verdict = "all under" if not over else f"OVER for {', '.join(over)}:"
    print(f"\ntarget: median < {TARGET_S:g} s per command -> {verdict} target")
    return 1 if (args.check and over) else 0


if __name__ == "__main__":
    sys.exit(main())
