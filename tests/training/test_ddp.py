"""torchrun DDP on CPU (gloo): 2 processes match 1 process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from sammed3d import load_checkpoint
from sammed3d.cli import main


def _final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "final.pth").state_dict()


def _run_torchrun(args: list[str], run_dir: Path, nproc: int = 2) -> None:
    """Launch ``torchrun -m sammed3d train`` and check that the run really finished.

    torchrun on CPU occasionally aborts at process exit (gloo teardown) after correct results.
    Such a non-zero exit is accepted only if the run wrote ``summary.json`` with status
    "finished" and world size ``nproc``: the trainer writes it after a final barrier that every
    rank must reach, i.e. after all training and the final checkpoint. Any earlier failure
    leaves no such summary and fails the test with the processes' output.
    """
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "sammed3d",
        "train",
        "--no-progress",
        *args,
    ]
    proc = subprocess.run(
        cmd, env=env, capture_output=True, text=True, encoding="utf-8", timeout=420
    )
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.exists() else {}
    finished = summary.get("status") == "finished" and summary.get("world_size") == nproc
    if proc.returncode != 0:
        if not finished or not (run_dir / "checkpoints" / "final.pth").exists():
            pytest.fail(
                f"torchrun failed (exit {proc.returncode}) before finishing:\n"
                f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
            )
        warnings.warn(
            f"torchrun exited with {proc.returncode} after a finished run (known CPU teardown "
            "abort); results are checked from the files",
            stacklevel=2,
        )
    assert finished, f"summary: {summary}\n{proc.stderr[-3000:]}"


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path, nnunet_dataset):
    common = [f"data.roots=[{nnunet_dataset}]", "train.epochs=2", "run.save_every_steps=100"]
    one = tmp_path / "one"
    # 1 process, batch 2
    args_one = ["--config", "tiny_cpu", "-o", str(one), *common, "train.batch_size=2"]
    assert main(["train", "--no-progress", *args_one]) == 0
    # 2 processes, batch 1 each: the same global batch; each rank builds half of the cache
    two = tmp_path / "two"
    _run_torchrun(["--config", "tiny_cpu", "-o", str(two), *common, "train.batch_size=1"], two)

    log_one = [json.loads(x) for x in (one / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    log_two = [json.loads(x) for x in (two / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in log_one] == [r["step"] for r in log_two] == [1, 2, 3, 4]
    for a, b in zip(log_one, log_two, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5)
        assert a["dice"] == pytest.approx(b["dice"], abs=1e-4)
    state_one, state_two = _final_state(one), _final_state(two)
    worst = max(float((state_one[k] - state_two[k]).abs().max()) for k in state_one)
    assert worst < 1e-4
    moved = _final_state(one)["mask_decoder.output_upscaling.0.weight"]
    assert torch.isfinite(moved).all()
    obj = torch.load(two / "checkpoints" / "final.pth", weights_only=True)
    assert obj["train_state"]["world_size"] == 2 and obj["train_state"]["global_step"] == 4
    manifest = (two / "cache").glob("*/manifest.jsonl")
    assert len(next(manifest).read_text(encoding="utf-8").splitlines()) == 8
