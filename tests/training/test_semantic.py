"""Semantic training through the shared trainer: init, freezing, layer decay, exact resume."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from sammed3d import build_model
from sammed3d.build import CheckpointError, save_checkpoint
from sammed3d.io import Volume, read_volume, write_volume
from sammed3d.task.checkpoint import read_task_checkpoint, save_task_checkpoint
from sammed3d.training import ConfigError, load_config, train
from sammed3d.training.semantic import (
    SemanticStep,
    absent_class_message,
    build_task_model,
    encoder_layer_depths,
    semantic_param_groups,
)
from tests.task.conftest import one_thread  # noqa: F401 - autouse fixture

from .conftest import tiny_overrides, write_nnunet_dataset

FAST = ["task.kind=semantic", "task.decoder_features=4", "run.save_every_steps=100"]


def _cfg(run: Path, root: Path, *extra: str):
    return load_config("tiny_cpu", tiny_overrides(run, *FAST, f"data.roots=[{root}]", *extra))


def _state(path: Path) -> dict[str, torch.Tensor]:
    return read_task_checkpoint(path)[1]


def test_frozen_encoder_from_a_sam_checkpoint(tmp_path, nnunet_dataset):
    torch.manual_seed(5)
    sam = build_model("sam_med3d_tiny")
    init = save_checkpoint(sam, tmp_path / "sam.pth")
    cfg = _cfg(
        tmp_path / "run",
        nnunet_dataset,
        "train.epochs=1",
        "task.samples_per_epoch=4",
        "model.freeze_image_encoder=true",
        "run.tensorboard=true",
        f"model.init_checkpoint={init}",
    )
    result = train(cfg, show_progress=False)
    assert result.finished and result.global_step == 2
    spec, state, meta = read_task_checkpoint(result.checkpoint)
    assert spec.classes == ("blob", "speck") and spec.modality == "CT"
    assert spec.encoder_origin == {
        "init": "checkpoint",
        "checkpoint": str(init),
        "file": str(init),
        "sha256": hashlib.sha256(init.read_bytes()).hexdigest(),
        "frozen": True,
        "layer_decay": 1.0,
    }
    for key, value in sam.image_encoder.state_dict().items():  # frozen: unchanged
        assert torch.equal(state[f"image_encoder.{key}"], value)
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(log[0]["dice"]) == 2 and set(log[0]["lr"]) == {"decoder"}  # frozen
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_layer_decay_rates(tmp_path, nnunet_dataset):
    cfg = _cfg(
        tmp_path / "run",
        nnunet_dataset,
        "task.layer_decay=0.5",
        "optim.lr=1e-3",
        "optim.no_decay_norms_embeddings=true",
    )
    model = build_task_model(cfg)
    depths = encoder_layer_depths(model)
    assert depths["blocks.0.attn.qkv.weight"] == 3 and depths["blocks.1.mlp.lin1.bias"] == 2
    assert depths["pos_embed"] == depths["patch_embed.proj.weight"] == 4
    assert depths["neck.0.weight"] == 1
    groups = semantic_param_groups(model, cfg)
    rate = {id(p): g["lr"] for g in groups for p in g["params"]}
    enc = model.image_encoder
    assert rate[id(enc.blocks[0].attn.qkv.weight)] == pytest.approx(1e-3 * 0.5**3)
    assert rate[id(enc.blocks[1].attn.qkv.weight)] == pytest.approx(1e-3 * 0.5**2)
    assert rate[id(enc.pos_embed)] == pytest.approx(1e-3 * 0.5**4)
    assert rate[id(enc.neck[0].weight)] == pytest.approx(1e-3 * 0.5)
    assert rate[id(model.decoder.out.conv.conv.weight)] == pytest.approx(1e-3)
    assert len(rate) == len(list(model.parameters()))  # every parameter once
    no_decay = {id(p) for g in groups if g.get("weight_decay") == 0.0 for p in g["params"]}
    assert id(enc.pos_embed) in no_decay and id(enc.blocks[0].attn.qkv.weight) not in no_decay


def test_kill_and_resume_equals_an_uninterrupted_run(tmp_path, nnunet_dataset):
    base = ["train.epochs=2", "task.samples_per_epoch=4", "task.layer_decay=0.8"]
    full = train(_cfg(tmp_path / "a", nnunet_dataset, *base), show_progress=False)
    first = train(
        _cfg(tmp_path / "b", nnunet_dataset, *base, "run.stop_after_steps=3"), show_progress=False
    )
    assert not first.finished and first.global_step == 3
    resumed = train(
        load_config(tmp_path / "b" / "config.yaml", ["run.stop_after_steps=null"]),
        resume=True,
        show_progress=False,
    )
    assert resumed.finished and resumed.global_step == full.global_step == 4
    a, b = _state(full.checkpoint), _state(resumed.checkpoint)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) == 0.0
    assert [h["loss"] for h in resumed.history] == pytest.approx(
        [h["loss"] for h in full.history][3:], abs=1e-6
    )


def test_short_fit_lowers_the_loss(tmp_path, nnunet_dataset):
    cfg = _cfg(
        tmp_path / "run",
        nnunet_dataset,
        "train.epochs=1",
        "task.samples_per_epoch=24",
        "optim.lr=3e-3",
        "data.flip_prob=0",
    )
    losses = [h["loss"] for h in train(cfg, show_progress=False).history]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.1


def test_init_and_resume_errors(tmp_path, nnunet_dataset):
    with pytest.raises(ConfigError, match="set model.init_checkpoint"):
        train(_cfg(tmp_path / "r0", nnunet_dataset, "model.require_init=true"), show_progress=False)
    small = save_checkpoint(build_model("sam_med3d_small"), tmp_path / "small.pth")
    with pytest.raises(CheckpointError, match="another architecture"):
        train(
            _cfg(tmp_path / "r1", nnunet_dataset, f"model.init_checkpoint={small}"),
            show_progress=False,
        )
    task = save_task_checkpoint(
        build_task_model(_cfg(tmp_path, nnunet_dataset)), tmp_path / "t.pth"
    )
    with pytest.raises(CheckpointError, match="is a task-model checkpoint"):
        train(
            _cfg(tmp_path / "r2", nnunet_dataset, f"model.init_checkpoint={task}"),
            show_progress=False,
        )
    with pytest.raises(FileNotFoundError, match="init checkpoint not found"):
        train(
            _cfg(tmp_path / "r3", nnunet_dataset, "model.init_checkpoint=missing.pth"),
            show_progress=False,
        )
    train(_cfg(tmp_path / "r4", nnunet_dataset, "run.stop_after_steps=1"), show_progress=False)
    changed = load_config(tmp_path / "r4" / "config.yaml", ["task.classes=[blob]"])
    with pytest.raises(CheckpointError, match=r"trained for classes \['blob', 'speck'\]"):
        train(changed, resume=True, show_progress=False)


def test_step_outputs_and_label_check():
    from tests.task.conftest import tiny_task_model

    step = SemanticStep(tiny_task_model().train())
    image = torch.randn(2, 1, 64, 64, 64)
    label = torch.zeros(2, 1, 64, 64, 64, dtype=torch.int64)
    label[:, :, 10:20, 10:20, 10:20] = 1
    out = step(image, label)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert out["dice"].shape == (2,)
    assert out["class_crops"].tolist() == [2.0, 0.0]
    out["loss"].backward()
    label = label.clone()
    label[1, :, 30:40, 30:40, 30:40] = 2  # class 2 in the second crop only
    assert step(image, label)["class_crops"].tolist() == [2.0, 1.0]
    with pytest.raises(ValueError, match=r"label values must be in 0\.\.2"):
        step(image, label + 3)
    with pytest.raises(ValueError, match="label must be"):
        step(image, label[:, :, :32])


def test_cli_cache_only_and_train(tmp_path, nnunet_dataset, capsys):
    from sammed3d.cli import main

    args = [
        "train",
        "--config",
        "tiny_cpu",
        "-o",
        str(tmp_path / "run"),
        "--no-progress",
        *FAST,
        f"data.roots=[{nnunet_dataset}]",
        "task.samples_per_epoch=2",
        "train.epochs=1",
    ]
    assert main([*args, "--cache-only"]) == 0
    assert "cache ready: 4 training cases" in capsys.readouterr().out
    # bad data is a one-line error (exit 2), before any training
    other = write_nnunet_dataset(tmp_path / "Dataset002_Bad", n_cases=1)
    label_file = other / "labelsTr" / "case_000.nii.gz"
    label = read_volume(label_file)
    write_volume(label.with_array(np.where(label.array == 2, 7, label.array)), label_file)
    bad = ["train", "--config", "tiny_cpu", "-o", str(tmp_path / "bad_run"), "--no-progress"]
    assert main([*bad, *FAST, f"data.roots=[{other}]", "train.epochs=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress log lines
    assert err.startswith("error: ") and "label value 7 is not declared" in err
    assert not (tmp_path / "bad_run" / "checkpoints").exists()
    assert main(args) == 0
    assert (tmp_path / "run" / "checkpoints" / "final.pth").exists()


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path, nnunet_dataset):
    """Per-sample DiceCE and instance norm: 2 ranks x batch 1 = 1 process x batch 2."""
    from sammed3d.cli import main
    from tests.training.test_ddp import _run_torchrun

    common = [
        *FAST,
        f"data.roots=[{nnunet_dataset}]",
        "train.epochs=2",
        "task.samples_per_epoch=4",
        "data.num_workers=0",
    ]
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["--config", "tiny_cpu", *common]
    assert main(["train", "--no-progress", "-o", str(one), *args, "train.batch_size=2"]) == 0
    _run_torchrun(["-o", str(two), *args, "train.batch_size=1"], two)
    log_one = [json.loads(x) for x in (one / "log.jsonl").read_text().splitlines()]
    log_two = [json.loads(x) for x in (two / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_one] == [r["step"] for r in log_two] == [1, 2, 3, 4]
    for a, b in zip(log_one, log_two, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5)
    a = _state(one / "checkpoints" / "final.pth")
    b = _state(two / "checkpoints" / "final.pth")
    # The same updates up to rounding: batch-2 and batch-1 convolutions round differently, and
    # Adam's first steps (~lr * sign(g)) turn that into lr-sized differences on the elements
    # whose gradient is near zero (~4 % of the update here). Unsynchronised ranks or other
    # crops would move the weights apart by the order of the update itself.
    init = build_task_model(load_config(one / "config.yaml")).state_dict()
    keys = [k for k in a if a[k].is_floating_point()]
    diff = sum(float((a[k] - b[k]).norm() ** 2) for k in keys) ** 0.5
    moved = sum(float((a[k] - init[k]).norm() ** 2) for k in keys) ** 0.5
    assert diff < 0.15 * moved, (diff, moved)


def test_resume_with_a_changed_layer_decay(tmp_path, nnunet_dataset):
    run = tmp_path / "run"
    base = ["train.epochs=2", "task.samples_per_epoch=4", "train.batch_size=1"]
    train(_cfg(run, nnunet_dataset, *base, "run.stop_after_steps=1"), show_progress=False)
    cfg = load_config(run / "config.yaml", ["task.layer_decay=0.5", "run.stop_after_steps=1"])
    result = train(cfg, resume=True, show_progress=False)
    lr = result.history[-1]["lr"]
    assert lr["decoder"] == pytest.approx(1e-3)
    assert lr["encoder_decay1"] == pytest.approx(1e-3 * 0.5)
    assert lr["encoder_decay4"] == pytest.approx(1e-3 * 0.5**4)


def test_absent_class_message():
    assert absent_class_message(["a", "b"], [3, 1], 4, 0.5) is None
    assert absent_class_message(["a", "b"], [0, 0], 0, 0.5) is None  # no crop trained
    one = absent_class_message(["a", "b"], [3, 0], 4, 0.0)
    assert one is not None and "\n" not in one
    assert one.startswith("class 'b' was in none of the 4 training crops of this run")
    assert "task.foreground_fraction=0" in one
    both = absent_class_message(["a", "b"], [0, 0], 4, 0.0)
    assert both is not None and both.startswith("classes ['a', 'b'] were in none")


def test_a_class_in_no_training_crop_is_reported(tmp_path, caplog):
    """Uniform crops (foreground_fraction 0) of a long case miss a small class at its far end:
    the run says so (warning + summary.json), it does not pass silently."""
    root = tmp_path / "Dataset010_Long"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    image = np.full((400, 24, 24), 100.0, np.float32)
    label = np.zeros(image.shape, np.uint8)
    label[0:200, 4:20, 4:20] = 1  # "near": half of the case
    label[394:398, 10:14, 10:14] = 2  # "far": 64 voxels at the other end
    image[label == 2] = 300.0
    write_volume(Volume(image, (1.5, 1.5, 1.5)), root / "imagesTr" / "c_0000.nii.gz")
    write_volume(Volume(label, (1.5, 1.5, 1.5)), root / "labelsTr" / "c.nii.gz")
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "MR"},
                "labels": {"background": 0, "near": 1, "far": 2},
                "file_ending": ".nii.gz",
            }
        )
    )
    run = tmp_path / "run"
    cfg = _cfg(
        run,
        root,
        "task.foreground_fraction=0",
        "task.samples_per_epoch=3",
        "train.epochs=1",
        "train.batch_size=1",
        "data.flip_prob=0",
        "train.seed=1",
    )
    with caplog.at_level(logging.WARNING, logger="sammed3d.training.trainer"):
        train(cfg, show_progress=False)
    crops = json.loads((run / "summary.json").read_text())["class_crops"]
    assert crops["far"] == 0 and 0 <= crops["near"] <= 3
    assert "class 'far' was in none of the 3 training crops of this run" in caplog.text
    # class-balanced crops (the default) find it
    cfg = _cfg(
        tmp_path / "balanced",
        root,
        "task.foreground_fraction=1",
        "task.samples_per_epoch=4",
        "train.epochs=1",
        "train.batch_size=1",
        "data.flip_prob=0",
    )
    train(cfg, show_progress=False)
    crops = json.loads((tmp_path / "balanced" / "summary.json").read_text())["class_crops"]
    assert crops["far"] >= 1 and crops["near"] >= 1


def test_dice_ce_loss_is_monais_and_leaves_the_padding_out():
    from monai.losses import DiceCELoss

    from sammed3d.training.semantic import dice_ce_loss
    from sammed3d.training.semantic_data import IGNORE_LABEL

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, 8)
    label = torch.randint(0, 3, (2, 1, 8, 8, 8))
    monai = DiceCELoss(to_onehot_y=True, softmax=True)(logits, label)
    assert float(dice_ce_loss(logits, label)) == pytest.approx(float(monai), rel=1e-6)
    # the image is the first 4 voxels of each axis; the rest is padding
    padded = label.clone()
    outside = torch.ones(8, 8, 8, dtype=torch.bool)
    outside[:4, :4, :4] = False
    padded[:, :, outside] = IGNORE_LABEL
    inner = DiceCELoss(to_onehot_y=True, softmax=True)(
        logits[..., :4, :4, :4], label[..., :4, :4, :4]
    )
    assert float(dice_ce_loss(logits, padded)) == pytest.approx(float(inner), rel=1e-6)
    # what the network says about the padding changes nothing, and gets no gradient
    other = logits.clone()
    other[:, 1, outside] = 50.0  # "foreground" everywhere in the padding
    other.requires_grad_(True)
    loss = dice_ce_loss(other, padded)
    assert float(loss.detach()) == pytest.approx(float(inner), rel=1e-6)
    loss.backward()
    assert other.grad is not None
    assert float(other.grad[:, :, outside].abs().max()) == 0.0


def test_crop_dice_leaves_the_padding_out():
    from sammed3d.training.semantic import crop_dice
    from sammed3d.training.semantic_data import IGNORE_LABEL

    label = torch.full((1, 8, 8, 8), IGNORE_LABEL, dtype=torch.int64)
    label[0, :4, :4, :4] = 0
    label[0, :2, :2, :2] = 1  # 8 voxels of class 1 in the image
    pred = torch.ones(1, 8, 8, 8, dtype=torch.int64)  # class 1 in the padding too
    pred[0, :4, :4, :4] = 0
    pred[0, :2, :2, :4] = 1  # 16 predicted voxels in the image, 8 of them right
    dice = crop_dice(pred, label, 2)
    assert dice.tolist() == pytest.approx([2 * 8 / (16 + 8), 1.0])  # class 2: nowhere


def test_step_accepts_the_ignore_label_only():
    from tests.task.conftest import tiny_task_model

    step = SemanticStep(tiny_task_model().train())
    image = torch.randn(1, 1, 64, 64, 64)
    label = torch.full((1, 1, 64, 64, 64), -1, dtype=torch.int64)
    label[:, :, :32, :32, :32] = 0
    label[:, :, 8:16, 8:16, 8:16] = 1
    out = step(image, label)
    assert torch.isfinite(out["loss"]) and out["class_crops"].tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match=r"label values must be in 0\.\.2 \(-1 beyond"):
        step(image, label - 1)
