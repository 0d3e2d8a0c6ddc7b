"""Training throughput (samples/s) and peak memory of the published click-simulation step.

One step = image encoder + ``--clicks`` simulated clicks (two mask-only iterations) with the
DiceCE loss on every click + backward + AdamW, exactly as ``sammed3d train`` runs it
(``ClickLoop``), on synthetic crops (no data loading). Peak memory is the CUDA allocator's peak
on GPU and the process's max RSS on CPU.

CPU (this project's 2-core machine)::

    .venv/bin/python benchmarks/bench_training.py --model sam_med3d_tiny --batch-size 2
    .venv/bin/python benchmarks/bench_training.py --model sam_med3d_small --batch-size 1

GPU (the published setting: ViT-B, batch 2, mixed precision; the published code needs 16 GB)::

    python benchmarks/bench_training.py --model sam_med3d --batch-size 2 --amp auto

``--baseline`` also times the same step with the reference (published) encoder attention in
the same run and prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _bench(args: argparse.Namespace, attn_impl: str) -> dict[str, object]:
    from sammed3d import build_model
    from sammed3d.training.data import SyntheticDataset
    from sammed3d.training.interaction import ClickLoop, mask_only_iterations
    from sammed3d.training.trainer import make_grad_scaler, never_trained_parameters, resolve_amp

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(args.model, device=device, attn_impl=attn_impl).train()  # type: ignore[arg-type]
    for name in never_trained_parameters(model):
        model.get_parameter(name).requires_grad_(False)
    amp = resolve_amp(args.amp, device)
    loop = ClickLoop(model, num_clicks=args.clicks, autocast_dtype=amp)
    scaler = make_grad_scaler(device, enabled=amp == torch.float16)
    enc = [p for p in model.image_encoder.parameters() if p.requires_grad]
    rest = [
        p
        for m in (model.prompt_encoder, model.mask_decoder)
        for p in m.parameters()
        if p.requires_grad
    ]
    opt = torch.optim.AdamW(
        [{"params": enc, "lr": 8e-4}, {"params": rest, "lr": 8e-5}], weight_decay=0.1
    )
    data = SyntheticDataset(args.batch_size, model.img_size, seed=0)
    batch = [data[(0, i)] for i in range(args.batch_size)]
    image = torch.stack([b["image"] for b in batch]).to(device)
    label = torch.stack([b["label"] for b in batch]).to(device)
    seeds = torch.stack([b["seed"] for b in batch])
    # the published draw: one mask-only iteration in [2, 8] and the last one
    random_range = [2, min(8, args.clicks - 1)] if args.clicks >= 4 else None
    mask_only = mask_only_iterations(args.clicks, random_range, True, np.random.default_rng(0))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step() -> float:
        out = loop(image, label, seeds, mask_only)
        scaler.scale(out["loss"]).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        sync()
        return float(out["loss"].detach())

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {
        "model": args.model,
        "attn_impl": attn_impl,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "clicks": args.clicks,
        "amp": str(amp).replace("torch.", "") if amp else "fp32",
        "step_seconds_median": round(median, 4),
        "samples_per_second": round(args.batch_size / median, 3),
        "peak_memory_mb": round(_peak_mb(device), 1),
        "final_loss": round(loss, 4),
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cuda = torch.cuda.is_available()
    parser.add_argument("--model", default="sam_med3d" if cuda else "sam_med3d_tiny")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--clicks", type=int, default=11)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--amp", default="auto", choices=["auto", "none", "bf16", "fp16"])
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also time the reference (published) encoder attention, in a separate process",
    )
    parser.add_argument("--attn-impl", default="fast", choices=["fast", "reference"])
    parser.add_argument("--json", action="store_true", help="print JSON lines only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    results = [_bench(args, args.attn_impl)]
    if args.baseline:  # separate process, so its peak memory is its own
        cmd = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:])]
        cmd = [c for c in cmd if c != "--baseline"] + ["--attn-impl", "reference", "--json"]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    for r in results:
        if args.json:
            print(json.dumps(r))
        else:
            print(
                f"{r['model']:>16} {r['attn_impl']:>9} {r['device_name']} bs={r['batch_size']} "
                f"clicks={r['clicks']} {r['amp']}: {r['step_seconds_median']:.3f} s/step, "
                f"{r['samples_per_second']:.3f} samples/s, peak {r['peak_memory_mb']:.0f} MB"
            )
    if args.baseline and not args.json:
        ratio = results[1]["step_seconds_median"] / results[0]["step_seconds_median"]  # type: ignore[operator]
        print(f"fast vs reference encoder attention: {ratio:.2f}x faster per training step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
