"""One-minute inference check on a GPU (or, for a dry run, the CPU): exactness and speed.

* ViT-B (the published ``sam_med3d_turbo`` architecture, random weights): the fast exact
  encoder against the published computation (``attn_impl="reference"``), in fp32; and the
  encoder under bf16 autocast against fp32 (relative error).
* The bundled default model (or ``--checkpoint``): first click and refinement click timings in
  model space, fp32 and bf16.

Writes ``OUT/cuda_check.json`` and prints it. Used by ``tools/gpu_train_default_model.py``.

Usage::

    python tools/cuda_check.py --out OUT [--device cuda] [--checkpoint CKPT] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def _timed(fn, device: torch.device, *args, repeat: int = 5) -> tuple[object, float]:  # noqa: ANN001
    """``fn(*args)`` once to warm up, then the median of ``repeat`` timed calls (seconds)."""
    out = fn(*args)
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*args)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return out, sorted(times)[len(times) // 2]


def _click_mask(model, emb, coords, labels, prev) -> torch.Tensor:  # noqa: ANN001
    """One decoder call and the full-size mask (what a click costs)."""
    low, _ = model.decode(emb, coords, labels, prev)
    return model.upsample_logits(low) > 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--checkpoint", default=None, help="default: the bundled model")
    parser.add_argument("--tiny", action="store_true", help="small models (CPU dry run)")
    args = parser.parse_args(argv)

    from sammed3d import build_model, load_checkpoint
    from sammed3d.paths import require_checkpoint

    device = torch.device(args.device)
    torch.manual_seed(0)
    report: dict[str, object] = {
        "device": str(device),
        "name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
    }
    vit_name = "sam_med3d_small" if args.tiny else "sam_med3d_turbo"
    vit = build_model(vit_name, device=device)
    with torch.no_grad():  # random weights everywhere, incl. the zero-initialised tables
        for p in vit.image_encoder.parameters():
            p.copy_(torch.randn_like(p) * 0.02)
    size = vit.img_size
    x = torch.randn(1, 1, size, size, size, device=device)
    with torch.inference_mode():
        fast, t_fast = _timed(vit.image_encoder, device, x)
        vit.image_encoder.set_attn_impl("reference")
        ref, t_ref = _timed(vit.image_encoder, device, x, repeat=2)
        vit.image_encoder.set_attn_impl("fast")
        with torch.autocast(device.type, dtype=torch.bfloat16):
            half, t_bf16 = _timed(vit.image_encoder, device, x)
    fast_t, ref_t, half_t = (torch.as_tensor(v).float() for v in (fast, ref, half))
    report["vit"] = {
        "model": vit_name,
        "encoder_fast_s": t_fast,
        "encoder_reference_s": t_ref,
        "encoder_bf16_s": t_bf16,
        "fast_vs_reference_max_abs": float((fast_t - ref_t).abs().max()),
        "bf16_vs_fp32_rel": float((half_t - fast_t).norm() / fast_t.norm()),
    }
    del vit

    model = load_checkpoint(require_checkpoint(args.checkpoint), device=device)
    size = model.img_size
    x = torch.randn(1, 1, size, size, size, device=device)
    c1 = torch.tensor([[[size / 2, size / 2, size / 2]]], device=device)
    l1 = torch.ones(1, 1, dtype=torch.long, device=device)
    c2 = torch.cat([c1, c1 + 9], dim=1)
    l2 = torch.tensor([[1, 0]], device=device)
    timings: dict[str, float] = {}
    with torch.inference_mode():
        for dtype in (None, torch.bfloat16):
            tag = "bf16" if dtype else "fp32"
            ctx = (
                torch.autocast(device.type, dtype=dtype)
                if dtype
                else torch.autocast(device.type, enabled=False)
            )
            with ctx:
                emb, timings[f"encode_{tag}_s"] = _timed(model.encode, device, x)
                prev, _ = model.decode(emb, c1, l1, None)
                m1, timings[f"first_click_decode_{tag}_s"] = _timed(
                    _click_mask, device, model, emb, c1, l1, None
                )
                _, timings[f"refinement_click_{tag}_s"] = _timed(
                    _click_mask, device, model, emb, c2, l2, prev
                )
                timings[f"first_mask_voxels_{tag}"] = float(torch.as_tensor(m1).sum())
    report["default_model"] = {"checkpoint": str(args.checkpoint or "bundled"), **timings}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cuda_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    ok = report["vit"]["fast_vs_reference_max_abs"] < 1e-3  # type: ignore[index]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
