"""I/O benchmark: the checked reader/writer against plain SimpleITK, in the same run.

Run: ``.venv/bin/python benchmarks/bench_io.py [--shape 512 512 300] [--repeat 3]``.

A synthetic int16 CT (0.7 x 0.7 x 1.5 mm) is written once per format; then, per format:

* **read**: ``sammed3d.io.read_volume`` (NIfTI through nibabel with the CRC/length check,
  NaN check, spacing check, header kept, no transposing copy) vs the unchecked reader it
  replaced: ``SimpleITK.ReadImage`` + ``GetArrayFromImage`` + a C-ordered ``(i, j, k)`` copy;
* **write**: ``sammed3d.io.write_volume`` of a uint8 label map on that grid (atomic, NIfTI
  header fields copied, NRRD ``space`` lines kept) vs ``SimpleITK.WriteImage``.

Printed: median seconds of each and the ratio ours / SimpleITK (the checks' cost).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _median_time(fn, repeat: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    import SimpleITK as sitk

    from sammed3d.io import Volume, read_volume, to_sitk, write_volume

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(512, 512, 300))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    shape = tuple(args.shape)
    rng = np.random.default_rng(0)
    ct = (rng.normal(40, 300, size=shape)).clip(-1024, 3000).astype(np.int16)
    vol = Volume(ct, (0.7, 0.7, 1.5), (-180.0, -180.0, -300.0))
    labels = (ct > 200).astype(np.uint8)
    print(f"volume {shape} int16, {ct.nbytes / 2**20:.0f} MB; median of {args.repeat}")
    print(f"{'format':<8} {'read ours':>10} {'read sitk':>10} {'ratio':>6}   "
          f"{'write ours':>10} {'write sitk':>10} {'ratio':>6}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for suffix in (".nii.gz", ".nii", ".nrrd", ".mha"):
            src = Path(tmp) / f"ct{suffix}"
            sitk.WriteImage(to_sitk(vol), str(src), useCompression=suffix != ".nii")
            ours_r = _median_time(lambda src=src: read_volume(src), args.repeat)
            sitk_r = _median_time(
                lambda src=src: np.ascontiguousarray(
                    sitk.GetArrayFromImage(sitk.ReadImage(str(src))).transpose(2, 1, 0)
                ),
                args.repeat,
            )
            read = read_volume(src)
            out = Path(tmp) / f"labels{suffix}"
            ours_w = _median_time(
                lambda read=read, out=out: write_volume(read.with_array(labels), out),
                args.repeat,
            )
            image = to_sitk(read.with_array(labels))
            sitk_w = _median_time(
                lambda image=image, out=out: sitk.WriteImage(image, str(out), useCompression=True),
                args.repeat,
            )
            print(
                f"{suffix:<8} {ours_r:10.2f} {sitk_r:10.2f} {ours_r / sitk_r:6.2f}   "
                f"{ours_w:10.2f} {sitk_w:10.2f} {ours_w / sitk_w:6.2f}"
            )


if __name__ == "__main__":
    main()
