"""Train candidates for the bundled default model on one GPU inside a fixed time budget.

What a lent GPU window (minutes, one try) needs: everything prepared, several candidates at
once, the learning-rate schedule ending when the time does, and only small files to bring back.

1. A CUDA check of inference (``tools/cuda_check.py``: fast vs published encoder, bf16 vs fp32,
   click timings) -> ``OUT/cuda_check.json``; it runs beside step 2.
2. Every variant (``--variant NAME 'KEY=VALUE ...'``, default one variant ``base`` with no
   overrides) trains at the same time, all in one process group on the one GPU, with the
   packaged config ``default_model``, crops generated on the GPU, bf16. First a probe of
   ``--probe-seconds`` measures each variant's crops per second while all run; then the real
   runs get exactly as many crops as that rate fills until the deadline, so the warm-up +
   cosine schedule ends with the time (``run.stop_after_minutes`` is the hard stop). A variant
   whose probe failed under bf16 is run in fp32 (``train.amp=none``).
3. ``OUT/NAME.pth`` for each variant: its last weights without training state (the bundled
   format, about 14 MB); ``OUT/logs.tar.gz``: each run's ``config.yaml``, ``log.jsonl``,
   ``summary.json`` and console output. The run folders (checkpoints every 2 minutes) are in
   ``--work``, by default ``OUT/runs``.

Crops are generated on the GPU by default (``sammed3d.training.synthesis`` in torch; connected
components by one ``cc3d`` pass on the CPU); ``--workers N`` generates them in N CPU DataLoader
workers instead. Measured on one H200 (2026-11-30, before components moved to ``cc3d``): with
flood fill on the GPU, 4 runs at once got about 0.4 crops/s each; with 14 CPU workers, one run
got 4.5-6.5 crops/s. ``benchmarks/bench_synthesis.py --device cuda`` measures the generator.

Usage::

    python tools/gpu_train_default_model.py OUT --init CKPT --deadline-seconds 500 \
        --variant base '' --variant fullres 'train.loss_resolution=full'

Dry run on a CPU (small steps, same code path): add ``--dry-run``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _train_command(run_dir: Path, overrides: list[str], args: argparse.Namespace) -> list[str]:
    """The ``sammed3d train`` command line of one run (overrides last: they win)."""
    cmd = [sys.executable, "-m", "sammed3d", "train", "--config", "default_model"]
    cmd += ["-o", str(run_dir), "--no-progress"]
    if args.init:
        cmd += ["--init", str(args.init)]
    base = (
        [f"data.num_workers={args.workers}", "data.generate_on_device=false"]
        if args.workers
        else ["data.generate_on_device=true", "data.num_workers=0"]
    )
    base += [
        "train.epochs=1",
        f"optim.lr={args.lr}",
        f"optim.warmup_steps={args.warmup_steps}",
        f"train.seed={args.seed}",
    ]
    if args.data_dir:
        base += [
            f"data.shape_bank={args.data_dir / 'shape_bank.npz'}",
            f"data.anatomy={args.data_dir / 'anatomy_mni152.npz'}",
        ]
    if args.dry_run:
        base += [
            "train.device=cpu",
            "train.amp=bf16",
            "train.batch_size=1",
            "data.targets_per_crop=2",
            "run.log_every_steps=1",
        ]
    else:
        base += [
            "train.device=cuda",
            "train.amp=bf16",
            f"train.batch_size={args.batch_size}",
            f"data.targets_per_crop={args.targets_per_crop}",
            "run.log_every_steps=5",
        ]
    return cmd + base + overrides


def _launch(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = str(ROOT / "src") + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    with open(log, "ab") as fh:  # the child keeps its own copy of the descriptor
        fh.write(("$ " + shlex.join(cmd) + "\n").encode())
        fh.flush()
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def _rate(run_dir: Path) -> float | None:
    """Crops per second of the last logged window of a run, or None (nothing logged).

    With a single window the rate includes start-up and compilation: an underestimate, which
    only makes the planned schedule end a little early."""
    path = run_dir / "log.jsonl"
    if not path.is_file():
        return None
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if not lines:
        return None
    return float(json.loads(lines[-1])["samples_per_second"])


#: Exit codes of a probe that was stopped, not crashed: done (0), or ended by its SIGTERM
#: (143: the trainer checkpointed and stopped; -15: killed before its handler was set).
STOPPED_EXITS = (0, 143, -15)


def _probe_crashed(returncode: int | None, stopped_by_us: bool) -> bool:
    """Whether a probe's exit means a crash (bf16 the likely cause), not a slow start.

    A probe this script stopped at its time limit is never a crash, whatever its exit code;
    otherwise only the exit codes of ``STOPPED_EXITS`` are a clean stop."""
    return not stopped_by_us and returncode not in STOPPED_EXITS


def _check_inputs(args: argparse.Namespace, variants: dict[str, list[str]]) -> str | None:
    """What is wrong with the command line, in one line, or None: checked before any work."""
    if args.init is not None and not args.init.is_file():
        return f"--init {args.init} is not a file"
    data_dir = args.data_dir or ROOT / "data" / "model" / "train"
    for fname in ("shape_bank.npz", "anatomy_mni152.npz"):
        if not (data_dir / fname).is_file():
            return (
                f"{data_dir / fname} is missing: run tools/build_demo_data.py --out data/model, "
                "or give --data-dir"
            )
    for name, overrides in variants.items():
        if not name or "/" in name or name.startswith("probe_"):
            return f"variant name {name!r}: expected a plain name (no '/', not 'probe_...')"
        bad = [ov for ov in overrides if "=" not in ov]
        if bad:
            return f"variant {name}: overrides must be KEY=VALUE, got {bad[0]!r}"
    work = args.work if args.work is not None else args.out / "runs"
    taken = [n for n in [*variants, *(f"probe_{v}" for v in variants)] if (work / n).exists()]
    if taken:
        return (
            f"{work / taken[0]} exists (an earlier call?): give another OUT or --work, "
            "or continue that run with sammed3d train --resume"
        )
    if args.deadline_seconds <= args.probe_seconds + 60 and args.rate is None:
        return (
            f"--deadline-seconds {args.deadline_seconds:g} leaves no time after a "
            f"{args.probe_seconds:g} s probe: give at least probe + 60 s, or --rate"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="folder for the files to bring back")
    p.add_argument("--init", type=Path, default=None, help="start from these weights")
    p.add_argument(
        "--variant",
        nargs=2,
        action="append",
        metavar=("NAME", "OVERRIDES"),
        help="a candidate: name and space-separated KEY=VALUE overrides",
    )
    p.add_argument(
        "--deadline-seconds",
        type=float,
        default=480.0,
        help="wall time from start until every run has stopped",
    )
    p.add_argument("--probe-seconds", type=float, default=70.0)
    p.add_argument(
        "--work",
        type=Path,
        default=None,
        help="folder of the run folders and their checkpoints (default OUT/runs; on "
        "the device machine put it outside $OUT to bring back only small files)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder with shape_bank.npz and anatomy_mni152.npz",
    )
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--targets-per-crop", type=int, default=4)
    p.add_argument("--lr", type=float, default=2.0e-4)
    p.add_argument("--warmup-steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny batches")
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="generate crops in this many CPU DataLoader workers (0: on the GPU)",
    )
    p.add_argument(
        "--rate", type=float, default=None, help="crops per second to plan with instead of a probe"
    )
    p.add_argument("--no-cuda-check", action="store_true")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    variants = {name: shlex.split(ov) for name, ov in (args.variant or [["base", ""]])}
    error = _check_inputs(args, variants)
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # the runs start in the repository root: every path absolute, as the caller meant it
    args.out = args.out.resolve()
    args.work = (args.work or args.out / "runs").resolve()
    args.init = args.init.resolve() if args.init else None
    args.data_dir = args.data_dir.resolve() if args.data_dir else None
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)

    def elapsed() -> float:
        return time.perf_counter() - t0

    check_cmd = [sys.executable, str(ROOT / "tools" / "cuda_check.py"), "--out", str(args.out)]
    check_cmd += ["--device", "cpu", "--tiny"] if args.dry_run else ["--device", "cuda"]
    check = None if args.no_cuda_check else _launch(check_cmd, args.work / "cuda_check.log")

    # 1. probes: every variant at once, so each rate is the rate under the same contention
    probes = {}
    for name, ov in variants.items() if args.rate is None else ():
        run_dir = args.work / f"probe_{name}"
        cmd = _train_command(run_dir, ov, args)
        cmd += [
            "data.synthetic_per_epoch=100000",
            f"run.stop_after_minutes={args.probe_seconds / 60}",
            "run.save_every_minutes=1000",
            "run.save_every_steps=1000000000",
            "run.tensorboard=false",
        ]
        probes[name] = (run_dir, _launch(cmd, args.work / f"{name}.log"))
    stopped: set[str] = set()
    for name, (_run_dir, proc) in probes.items():
        try:  # the trainer stops itself after a step; a slow first step gets a minute more
            proc.wait(timeout=max(args.probe_seconds + 60 - elapsed(), 1))
        except subprocess.TimeoutExpired:
            print(f"[{elapsed():.0f}s] {name}: probe still running, stopping it", flush=True)
            stopped.add(name)
            proc.terminate()
            proc.wait()
    rates: dict[str, float] = dict.fromkeys(variants, args.rate) if args.rate else {}
    amp: dict[str, list[str]] = {}
    for name, (run_dir, proc) in probes.items():
        rate = _rate(run_dir)
        if _probe_crashed(proc.returncode, name in stopped):
            print(
                f"[{elapsed():.0f}s] {name}: probe failed (exit {proc.returncode}); fp32 from here",
                flush=True,
            )
            amp[name] = ["train.amp=none"]
        rates[name] = rate or 0.0
        print(f"[{elapsed():.0f}s] {name}: probe {rates[name]:.2f} crops/s", flush=True)
    known = [r for r in rates.values() if r > 0]
    fallback = min(known) / 2 if known else (0.5 if args.dry_run else 4.0)

    # 2. the real runs: as many crops as the measured rate fills until the deadline
    left = args.deadline_seconds - elapsed() - (25 if args.dry_run else 40)  # start-up + export
    if left < (20 if args.dry_run else 60):
        print(
            f"[{elapsed():.0f}s] warning: the probes left {max(left, 0):.0f} s to train "
            f"(--deadline-seconds {args.deadline_seconds:g}); give a longer deadline, "
            "or --rate to skip the probe",
            flush=True,
        )
    runs = {}
    plan = {}
    for name, ov in variants.items():
        rate = rates[name] or fallback
        crops = max(int(rate * left * 0.97), 2 * (1 if args.dry_run else args.batch_size))
        run_dir = args.work / name
        cmd = _train_command(run_dir, ov + amp.get(name, []), args)
        cmd += [
            f"data.synthetic_per_epoch={crops}",
            f"run.stop_after_minutes={left / 60:.3f}",
            "run.save_every_minutes=2",
            "run.keep_last=2",
        ]
        plan[name] = {
            "overrides": ov + amp.get(name, []),
            "probe_crops_per_s": rates[name],
            "crops": crops,
            "seconds": left,
        }
        print(f"[{elapsed():.0f}s] {name}: {crops} crops in {left:.0f} s", flush=True)
        runs[name] = (run_dir, _launch(cmd, args.work / f"{name}.log"))
    for name, (_run_dir, proc) in runs.items():  # past the deadline: checkpoint and stop
        try:
            proc.wait(timeout=max(args.deadline_seconds - 12 - elapsed(), 1))
        except subprocess.TimeoutExpired:
            print(f"[{elapsed():.0f}s] {name}: past the deadline, stopping it", flush=True)
            proc.terminate()  # SIGTERM: the trainer checkpoints at the next step and stops
    for _run_dir, proc in runs.values():
        try:
            proc.wait(timeout=max(args.deadline_seconds - 4 - elapsed(), 1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    try:
        if check is not None:
            check.wait(timeout=5)
    except subprocess.TimeoutExpired:
        check.kill()

    # 3. export the last weights of each run, bundle the logs
    env_path = str(ROOT / "src")
    if env_path not in sys.path:
        sys.path.insert(0, env_path)
    from sammed3d import load_checkpoint, save_checkpoint
    from sammed3d.training.checkpoint import find_latest_checkpoint

    for name, (run_dir, proc) in runs.items():
        ckpt = find_latest_checkpoint(run_dir)
        plan[name]["exit"] = proc.returncode
        if ckpt is None:
            print(f"{name}: no checkpoint (exit {proc.returncode})", flush=True)
            continue
        model = load_checkpoint(ckpt)
        meta = {
            **model.metadata,
            "source_checkpoint": str(ckpt),
            "trained_by": "tools/gpu_train_default_model.py",
            "overrides": " ".join(plan[name]["overrides"]),
        }
        save_checkpoint(model, args.out / f"{name}.pth", metadata=meta)
        plan[name]["checkpoint"] = str(ckpt)
        print(
            f"[{elapsed():.0f}s] {name}: exported {args.out / (name + '.pth')} from {ckpt}",
            flush=True,
        )
    (args.work / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
    with tarfile.open(args.out / "logs.tar.gz", "w:gz") as tar:
        for path in sorted(args.work.rglob("*")):
            if path.is_file() and (
                path.suffix in {".log", ".jsonl", ".yaml"}
                or path.name in {"summary.json", "plan.json"}
            ):
                tar.add(path, arcname=str(path.relative_to(args.work)))
    print(f"[{elapsed():.0f}s] done", flush=True)
    return 0 if all(p.returncode == 0 for _, p in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
