"""Training checkpoints of a run folder: written, rotated, found, read back, fallen back from."""

from __future__ import annotations

import json
import logging
import random

import numpy as np
import pytest
import torch

from sammed3d import build_model, load_checkpoint, save_checkpoint
from sammed3d.build import CheckpointError, read_checkpoint
from sammed3d.training import ConfigError
from sammed3d.training.checkpoint import (
    CHECKPOINT_DIR,
    FINAL_NAME,
    LATEST_POINTER,
    check_run_folder,
    checkpoint_candidates,
    find_latest_checkpoint,
    load_resume_checkpoint,
    read_training_checkpoint,
    rng_state,
    save_training_checkpoint,
    set_rng_state,
    step_checkpoint_name,
)


@pytest.fixture(scope="module")
def model():
    return build_model("sam_med3d_tiny")


def _state(step: int) -> dict:
    """The training state the trainer stores (values only; layout as in a real run)."""
    train_state = {"epoch": 0, "step_in_epoch": step, "global_step": step, "world_size": 1}
    return {
        "epoch": 0,
        "optimizer_state_dict": {"state": {}, "param_groups": []},
        "lr_scheduler_state_dict": {"last_epoch": step},
        "scaler_state_dict": {},
        "train_state": train_state,
        "rng_state": rng_state(),
        "train_config": {},
    }


def _save(model, run, step: int, keep_last: int = 2, final: bool = False):
    name = FINAL_NAME if final else step_checkpoint_name(step)
    meta = {"global_step": step}
    return save_training_checkpoint(
        model, run, name, metadata=meta, state=_state(step), keep_last=keep_last
    )


def test_save_points_latest_json_at_the_newest_and_rotates(tmp_path, model):
    for step in (1, 2, 3):
        path = _save(model, tmp_path, step)
    ckpts = tmp_path / CHECKPOINT_DIR
    assert sorted(p.name for p in ckpts.iterdir()) == [
        LATEST_POINTER, "step_00000002.pth", "step_00000003.pth"
    ]  # fmt: skip
    assert json.loads((ckpts / LATEST_POINTER).read_text()) == {
        "file": "step_00000003.pth", "epoch": 0, "step_in_epoch": 3, "global_step": 3,
        "world_size": 1,
    }  # fmt: skip
    assert find_latest_checkpoint(tmp_path) == path
    final = _save(model, tmp_path, 4, final=True)
    assert checkpoint_candidates(tmp_path) == [
        final,
        ckpts / "step_00000003.pth",
        ckpts / "step_00000002.pth",
    ]
    # a model checkpoint like any other: every loader reads it
    obj = torch.load(final, weights_only=True)
    assert obj["train_state"]["global_step"] == 4 and obj["metadata"] == {"global_step": 4}
    assert load_checkpoint(final).img_size == 64
    assert not list(ckpts.glob(".*"))  # no temp files left


def test_an_unreadable_pointer_falls_back_to_the_files(tmp_path, model, caplog):
    _save(model, tmp_path, 1, keep_last=3)
    _save(model, tmp_path, 2, keep_last=3)
    (tmp_path / CHECKPOINT_DIR / LATEST_POINTER).write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert find_latest_checkpoint(tmp_path).name == "step_00000002.pth"
    assert "ignoring unreadable" in caplog.text
    assert find_latest_checkpoint(tmp_path / "nowhere") is None


def test_run_folder_rules(tmp_path, model):
    assert check_run_folder(tmp_path, resume=False) is None
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        check_run_folder(tmp_path, resume=True)
    path = _save(model, tmp_path, 1)
    assert check_run_folder(tmp_path, resume=True) == path
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        check_run_folder(tmp_path, resume=False)


@pytest.mark.parametrize(
    "content",
    [b"<html><body>quota exceeded</body></html>", b"PK\x03\x04" + bytes(300), b"\x00" * 64],
)
def test_a_broken_file_gets_the_message_every_loader_gives(tmp_path, content):
    bad = tmp_path / "step_00000001.pth"
    bad.write_bytes(content)
    with pytest.raises(CheckpointError) as from_resume:
        read_training_checkpoint(bad)
    with pytest.raises(CheckpointError) as from_loader:
        read_checkpoint(bad)
    assert str(from_resume.value) == str(from_loader.value)
    assert "\n" not in str(from_resume.value)


def test_a_model_checkpoint_is_not_resumable(tmp_path, model):
    path = save_checkpoint(model, tmp_path / "model.pth")
    with pytest.raises(CheckpointError, match="not a training checkpoint .*use it as --init"):
        read_training_checkpoint(path)


def test_resume_falls_back_to_the_newest_readable_checkpoint(tmp_path, model, caplog):
    _save(model, tmp_path, 1, keep_last=3)
    newest = _save(model, tmp_path, 2, keep_last=3)
    raw = newest.read_bytes()
    newest.write_bytes(raw[: len(raw) // 2])  # truncated by a crash
    with caplog.at_level(logging.WARNING):
        path, obj = load_resume_checkpoint(tmp_path, newest)
    assert path.name == "step_00000001.pth" and obj["train_state"]["global_step"] == 1
    assert "resuming from the older checkpoint step_00000001.pth" in caplog.text
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="no usable checkpoint .*2 tried.*truncated"):
        load_resume_checkpoint(tmp_path, newest)


def test_rng_state_round_trip():
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    saved = rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(5)
    np.random.rand(5)
    set_rng_state(saved)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert first[2] == again[2]


def test_a_resumed_model_keeps_its_behaviours_and_inference_rules(tmp_path):
    """2026-12-03 trial: a run started from the bundled model (--init default) lost zoom-in,
    boundary refinement, the edge pick and the rim edit at its first resume (the resumed
    model was rebuilt from the registry config), and a run trained without the negative-click
    similarity map got it back."""
    import dataclasses

    from sammed3d.build import model_config_of
    from sammed3d.training.checkpoint import resumed_model

    ours = build_model("sam_med3d_tiny")
    rules = {
        "first_click_multimask": True,
        "negative_click_similarity": False,
        "zoom_spacing": 1.0,
        "refine_boundary": 3.0,
        "contrast_guard": 0.4,
        "first_pick": "edges",
        "later_check": "edges",
        "fine_zoom_spacing": 0.5,
        "rim_edit": 3.0,
        "click_bounds": "negative",
    }
    ours.config = dataclasses.replace(model_config_of(ours), **rules)
    path = _save(ours, tmp_path, 3)
    _, obj = load_resume_checkpoint(tmp_path, path)
    back = model_config_of(resumed_model(path, obj, "sam_med3d_tiny"))
    assert {k: getattr(back, k) for k in rules} == rules
    # the loader of every other command reads the same file the same way
    assert model_config_of(load_checkpoint(path)).to_dict() == back.to_dict()
