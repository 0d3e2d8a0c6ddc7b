"""Model-core benchmark: published (reference) vs fast encoder, per-click decoder cost, memory.

Run: ``.venv/bin/python benchmarks/bench_model.py [--model sam_med3d] [--threads 2]``.
Timings are measured in this run for both paths (random weights; the arithmetic does not
depend on the values). Peak memory is the process's max RSS after the fast path only, so the
reference run (which needs more memory) is done afterwards.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

import torch


def _timeit(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="sam_med3d")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-reference", action="store_true")
    args = parser.parse_args(argv)

    from sammed3d import build_model

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(args.model, device=dev)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    s = model.img_size
    x = torch.randn(1, 1, s, s, s, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def encode() -> torch.Tensor:
        out = model.image_encoder(x)
        sync()
        return out

    print(
        f"model={args.model} device={dev} threads={torch.get_num_threads()}",
        f"torch={torch.__version__}",
    )
    with torch.inference_mode():
        model.image_encoder.set_attn_impl("fast")
        encode()  # warm-up
        fast_t = _timeit(encode, args.repeat)
        emb_fast = encode()
        rss_fast = _peak_rss_mb()
        print(
            f"encoder fast      : median {statistics.median(fast_t):.3f} s  (min {min(fast_t):.3f})"
        )
        print(f"peak RSS (fast)   : {rss_fast:.0f} MB")

        coords = torch.tensor([[[40.0, 70.0, 90.0]]], device=dev)
        labels = torch.tensor([[1]], device=dev)
        prev = torch.zeros(1, 1, *model.low_res_size, device=dev)

        def click() -> None:
            low, _ = model.decode(emb_fast, coords, labels, prev)
            (model.upsample_logits(low) > 0).any().item()

        click()
        click_t = _timeit(click, 20)
        print(
            "click (prompt+decoder+upsample+threshold): "
            f"median {1e3 * statistics.median(click_t):.1f} ms  (min {1e3 * min(click_t):.1f})"
        )
        if args.skip_reference:
            return 0
        model.image_encoder.set_attn_impl("reference")
        ref_t = _timeit(encode, max(1, args.repeat - 1))
        emb_ref = encode()
        diff = (emb_ref - emb_fast).abs().max().item()
        ratio = statistics.median(ref_t) / statistics.median(fast_t)
        print(f"encoder reference : median {statistics.median(ref_t):.3f} s")
        print(f"speed-up fast vs reference: {ratio:.1f}x   max |diff| = {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
