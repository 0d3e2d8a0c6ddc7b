"""Throughput of the on-the-fly training-data generator (``sammed3d.training.synthesis``).

Two numbers per device:

* crops per second of :meth:`SyntheticGenerator.sample` (random label ensembles) and
  :meth:`SyntheticGenerator.sample_anatomy` (MNI152 anatomy), ``--targets`` targets each;
* the cost of finding a target's connected component, for the same masks the generator
  meets: :func:`label_components` (one ``cc3d`` pass on the CPU, the generator's method) against
  the baseline, flood fill by repeated 6-neighbour dilation inside the mask (how the generator
  found components on a GPU before), with the number of convolutions the baseline needs.

CPU (the flood fill is slow on a CPU: keep ``--masks`` small)::

    .venv/bin/python benchmarks/bench_synthesis.py --crops 6 --masks 3

GPU::

    python benchmarks/bench_synthesis.py --device cuda --crops 40 --masks 40

Needs ``data/model/train/{shape_bank,anatomy_mni152}.npz`` (``tools/build_demo_data.py``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]


def flood_fill(mask: torch.Tensor, seed: tuple[int, int, int]) -> tuple[torch.Tensor, int]:
    """The baseline: the 6-connected component of ``mask`` through ``seed`` by dilating a
    one-voxel region inside the mask until it stops growing (checked every 17 dilations).
    Returns the component and the number of ``conv3d`` calls."""
    kernel = torch.zeros((1, 1, 3, 3, 3), device=mask.device)
    kernel[0, 0, 1, 1, :] = kernel[0, 0, 1, :, 1] = kernel[0, 0, :, 1, 1] = 1.0
    m = mask.float()[None, None]
    r = torch.zeros_like(m)
    r[(0, 0, *seed)] = 1.0
    convs = 0
    while True:
        for _ in range(16):
            r = (F.conv3d(r, kernel, padding=1) > 0).float() * m
        grown = (F.conv3d(r, kernel, padding=1) > 0).float() * m
        convs += 17
        if torch.equal(grown, r):
            return r[0, 0] > 0, convs
        r = grown


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--crops", type=int, default=6, help="crops timed per kind")
    p.add_argument("--masks", type=int, default=3, help="component look-ups timed per method")
    p.add_argument("--targets", type=int, default=4)
    p.add_argument("--data", type=Path, default=ROOT / "data" / "model" / "train")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)

    from sammed3d.training import synthesis as S

    try:
        device = torch.device(args.device)
    except RuntimeError:
        print(
            f"error: --device {args.device!r} is not a torch device (cpu, cuda, cuda:1)",
            file=sys.stderr,
        )
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but this torch sees no CUDA device", file=sys.stderr)
        return 2
    for name in ("shape_bank.npz", "anatomy_mni152.npz"):
        if not (args.data / name).is_file():
            print(
                f"error: {args.data / name} is missing: run tools/build_demo_data.py --out "
                "data/model first",
                file=sys.stderr,
            )
            return 2
    bank = S.load_shape_bank(args.data / "shape_bank.npz")
    anatomy = S.Anatomy.load(args.data / "anatomy_mni152.npz")
    gen = S.SyntheticGenerator(device=device, shape_bank=bank)

    # record the masks the generator looks up (its own calls go through label_components)
    seen: list[tuple[torch.Tensor, tuple[int, int, int]]] = []
    original = S.component_at

    def recording(components: torch.Tensor, seed: tuple[int, int, int]) -> torch.Tensor:
        out = original(components, seed)
        if out.any() and len(seen) < args.masks:
            seen.append((components == components[seed], seed))  # a fill cannot leave it
        return out

    gen.sample(10_000_000, args.targets)  # warm-up (kernels, allocator)
    results: dict[str, object] = {"device": str(device), "targets": args.targets}
    for kind in ("generated", "anatomy"):
        times = []
        for seed in range(args.crops):
            _sync(device)
            t0 = time.perf_counter()
            if kind == "generated":
                gen.sample(seed, args.targets)
            else:
                gen.sample_anatomy(anatomy, seed, args.targets)
            _sync(device)
            times.append(time.perf_counter() - t0)
        results[f"{kind}_crops_per_s"] = 1.0 / statistics.mean(times)

    S.component_at = recording  # type: ignore[assignment]
    try:
        gen.sample(20_000_000, args.targets)
        gen.sample_anatomy(anatomy, 20_000_000, args.targets)
    finally:
        S.component_at = original  # type: ignore[assignment]
    # the same masks and seeds for both methods
    ours, base, convs = [], [], []
    for mask, seed in seen:
        _sync(device)
        t0 = time.perf_counter()
        a = S.connected_component_at(mask, seed)
        _sync(device)
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        b, n = flood_fill(mask, seed)
        _sync(device)
        base.append(time.perf_counter() - t0)
        convs.append(n)
        if not torch.equal(a, b):
            print("error: the two methods disagree on a component", file=sys.stderr)
            return 1
    if seen:
        results["component_ms_cc3d"] = 1000 * statistics.mean(ours)
        results["component_ms_flood_fill"] = 1000 * statistics.mean(base)
        results["flood_fill_conv3d_per_lookup"] = statistics.mean(convs)
        results["speedup"] = statistics.mean(base) / statistics.mean(ours)
    for key, value in results.items():
        print(f"{key:32s} {value:.3f}" if isinstance(value, float) else f"{key:32s} {value}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
