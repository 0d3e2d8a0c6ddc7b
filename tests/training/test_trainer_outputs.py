"""What a run says about itself: the start line, the progress bar, log.jsonl, resume notes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from sammed3d.training import load_config, train
from sammed3d.training.checkpoint import stop_after_steps_note
from sammed3d.training.data import SyntheticDataset
from sammed3d.training.trainer import Trainer
from tests.task.conftest import one_thread  # noqa: F401 - autouse fixture

from .conftest import tiny_overrides

SEMANTIC = ["task.kind=semantic", "task.decoder_features=4", "run.save_every_steps=100"]


def _log(run: Path) -> list[dict]:
    lines = (run / "log.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(x) for x in lines]


def _start_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "process(es) on" in r.getMessage()]


class _Bar:
    """Records what the trainer gives the progress bar."""

    made: list[_Bar] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.postfix: list[dict] = []
        _Bar.made.append(self)

    def update(self, n):
        pass

    def set_postfix(self, values):
        self.postfix.append(dict(values))

    def close(self):
        pass


@pytest.fixture()
def bars(monkeypatch):
    _Bar.made = []
    monkeypatch.setattr("sammed3d.training.trainer.tqdm", _Bar)
    return _Bar.made


def test_semantic_run_names_its_classes_and_shows_the_mean_dice(
    tmp_path, nnunet_dataset, caplog, bars
):
    cfg = load_config(
        "tiny_cpu",
        tiny_overrides(
            tmp_path / "run",
            *SEMANTIC,
            f"data.roots=[{nnunet_dataset}]",
            "train.epochs=2",
            "task.samples_per_epoch=4",
            "run.stop_after_steps=3",
        ),
    )
    with caplog.at_level(logging.INFO, logger="sammed3d.training.trainer"):
        result = train(cfg, show_progress=False)
    assert result.global_step == 3 and not result.finished
    start = _start_lines(caplog)
    assert len(start) == 1
    assert start[0].startswith(
        "training task model (2 classes: blob, speck) on the sam_med3d_tiny encoder: "
        "4 crops/epoch from 4 cases, 1 process(es) on cpu, global batch 2, 2 steps/epoch, "
        "2 epochs, amp="
    )
    assert "targets" not in start[0]
    assert "run.stop_after_steps=3: this invocation runs 3 step(s), from step 0 to 3" in caplog.text
    log = _log(tmp_path / "run")
    assert [r["step"] for r in log] == [1, 2, 3]
    assert all(r["dice_names"] == ["blob", "speck"] and len(r["dice"]) == 2 for r in log)
    (bar,) = bars
    assert bar.kwargs["total"] == 3 and bar.kwargs["initial"] == 0
    last = log[-1]
    assert bar.postfix[-1] == {
        "loss": f"{last['loss']:.4f}",
        "dice(mean of 2 classes)": f"{sum(last['dice']) / 2:.3f}",
        "epoch": 1,
    }


def test_bar_postfix_semantic_is_the_mean_over_classes():
    trainer = Trainer(load_config("tiny_cpu", ["task.kind=semantic"]), show_progress=False)
    trainer.epoch = 4
    assert trainer._bar_postfix(0.25, [0.0, 0.4, 0.0348]) == {
        "loss": "0.2500",
        "dice(mean of 3 classes)": "0.145",
        "epoch": 4,
    }
    interactive = Trainer(load_config("tiny_cpu"), show_progress=False)
    assert interactive._bar_postfix(0.5, [0.1, 0.2, 0.3]) == {
        "loss": "0.5000",
        "dice(click 3)": "0.300",
        "epoch": 0,
    }


def test_interactive_log_names_the_clicks_and_resume_says_where_it_stops(tmp_path, caplog, bars):
    run = tmp_path / "run"
    data = SyntheticDataset(4, 64, seed=1)
    base = ["train.epochs=10", "run.save_every_steps=100"]
    cfg = load_config("tiny_cpu", tiny_overrides(run, *base, "run.stop_after_steps=2"))
    with caplog.at_level(logging.INFO, logger="sammed3d.training.trainer"):
        train(cfg, dataset=data, show_progress=False)
    start = _start_lines(caplog)
    assert start[0].startswith("training sam_med3d_tiny: 4 targets, 1 process(es) on cpu")
    log = _log(run)
    assert log[0]["dice_names"] == ["click 1", "click 2", "click 3"]
    assert bars[0].kwargs["total"] == 2 and bars[0].kwargs["initial"] == 0
    assert set(bars[0].postfix[-1]) == {"loss", "dice(click 3)", "epoch"}

    caplog.clear()
    cfg = load_config(run / "config.yaml", ["run.stop_after_steps=3"])
    with caplog.at_level(logging.INFO, logger="sammed3d"):
        result = train(cfg, resume=True, dataset=data, show_progress=False)
    assert result.global_step == 5  # 3 more steps: the limit counts this invocation's steps
    assert (
        "resumed with a changed setting: run.stop_after_steps: 2 -> 3 "
        "(steps of this invocation: this run stops at step 5)" in caplog.text
    )
    assert "this invocation runs 3 step(s), from step 2 to 5" in caplog.text
    assert bars[1].kwargs["total"] == 3 and bars[1].kwargs["initial"] == 0
    assert [r["step"] for r in _log(run)] == [1, 2, 3, 4, 5]

    # no step limit: the bar counts the whole run from where it is
    cfg = load_config(run / "config.yaml", ["run.stop_after_steps=null", "train.epochs=3"])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sammed3d"):
        result = train(cfg, resume=True, dataset=data, show_progress=False)
    assert result.finished and result.global_step == 6
    assert (
        "run.stop_after_steps: 3 -> None (no step limit: this run trains to step 6)" in caplog.text
    )
    assert bars[2].kwargs["total"] == 6 and bars[2].kwargs["initial"] == 5
    assert "already finished" not in caplog.text

    # a finished run resumed as it is: said, with what to change (2026-12-03 trial: silent)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sammed3d"):
        result = train(load_config(run / "config.yaml"), resume=True, dataset=data)
    assert result.finished and result.global_step == 6
    assert (
        "this run has already finished its 3 epochs: nothing to train; to train on, resume "
        "with a larger train.epochs (e.g. train.epochs=6)" in caplog.text
    )


def test_stop_after_steps_note():
    assert stop_after_steps_note(30, 20, 25000) == (
        " (steps of this invocation: this run stops at step 50)"
    )
    assert stop_after_steps_note(30, 20, 40) == (
        " (steps of this invocation: this run stops at step 40, the end of the last epoch)"
    )
    assert stop_after_steps_note(None, 20, None) == " (no step limit: this run trains to the end)"


def test_a_warm_up_longer_than_the_run_is_said(tmp_path, caplog, bars):
    """2026-12-03 re-trial: a 12-step fine-tune with optim.warmup_steps=20 peaked at a fifth
    of optim.lr without a word."""
    data = SyntheticDataset(4, 64, seed=1)
    over = ["train.epochs=1", "optim.warmup_steps=20", "run.stop_after_steps=1"]
    cfg = load_config("tiny_cpu", tiny_overrides(tmp_path / "run", *over))
    with caplog.at_level(logging.WARNING, logger="sammed3d.training"):
        result = train(cfg, dataset=data)
    total = result.global_step
    assert (
        "optim.warmup_steps=20 for a run of 2 steps: the learning rate never reaches optim.lr; "
        "lower optim.warmup_steps (e.g. 1) or train longer" in caplog.text
    ), (total, caplog.text)
