"""The trainer: a short fit, exact resume, init checkpoints, freezing, run-folder rules."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from sammed3d import build_model, load_checkpoint
from sammed3d.build import CheckpointError, export_published, save_checkpoint
from sammed3d.training import ConfigError, load_config, train
from sammed3d.training.checkpoint import find_latest_checkpoint
from sammed3d.training.data import SyntheticDataset
from sammed3d.training.trainer import never_trained_parameters

from .conftest import tiny_overrides


def _data(n: int = 4) -> SyntheticDataset:
    return SyntheticDataset(n, 64, seed=1)


def _state(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).state_dict()


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_short_fit_lowers_the_loss(tmp_path):
    cfg = load_config(
        "tiny_cpu",
        tiny_overrides(tmp_path / "run", "train.epochs=6", "optim.lr=3e-3", "run.tensorboard=true"),
    )
    result = train(cfg, dataset=_data(), show_progress=False)
    assert result.finished and result.global_step == 12 and result.epoch == 6
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.1
    # outputs: resolved config, per-step log, TensorBoard events, summary, final checkpoint
    run = tmp_path / "run"
    assert load_config(run / "config.yaml") == cfg
    log = [json.loads(x) for x in (run / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in log] == list(range(1, 13))
    assert len(log[0]["dice"]) == 3 and set(log[0]["lr"]) == {
        "image_encoder",
        "prompt_encoder",
        "mask_decoder",
    }
    assert log[0]["lr"]["mask_decoder"] == pytest.approx(0.1 * log[0]["lr"]["image_encoder"])
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "finished" and summary["samples_per_second"] > 0
    assert find_latest_checkpoint(run) == run / "checkpoints" / "final.pth"


def test_tensorboard_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config(
        "tiny_cpu", tiny_overrides(tmp_path, "train.epochs=1", "run.tensorboard=true")
    )
    train(cfg, dataset=_data(), show_progress=False)
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/dice_click_01", "train/dice_click_03"} <= tags
    assert {"train/lr_image_encoder", "train/lr_mask_decoder"} <= tags


def test_checkpoint_contents_and_loading(tmp_path):
    cfg = load_config("tiny_cpu", tiny_overrides(tmp_path, "train.epochs=1"))
    result = train(cfg, dataset=_data(), show_progress=False)
    obj = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    for key in (
        "model_state_dict",
        "model_config",
        "optimizer_state_dict",
        "lr_scheduler_state_dict",
        "scaler_state_dict",
        "train_state",
        "rng_state",
        "train_config",
        "epoch",
    ):
        assert key in obj, key
    assert obj["train_state"] == {"epoch": 1, "step_in_epoch": 0, "global_step": 2, "world_size": 1}
    assert obj["train_config"] == cfg.to_dict()
    assert not any(k.startswith("module.") for k in obj["model_state_dict"])
    model = load_checkpoint(result.checkpoint)
    assert model.img_size == 64
    from sammed3d import SamMed3DPredictor

    predictor = SamMed3DPredictor.from_checkpoint(result.checkpoint)
    key = "mask_decoder.output_upscaling.0.weight"
    assert torch.equal(predictor.model.state_dict()[key], obj["model_state_dict"][key])


def test_kill_and_resume_equals_an_uninterrupted_run(tmp_path):
    base = ["train.epochs=3", "run.save_every_steps=100", "data.random_shift=0"]
    full = train(
        load_config("tiny_cpu", tiny_overrides(tmp_path / "a", *base)),
        dataset=_data(),
        show_progress=False,
    )
    # "kill" after 3 of 6 steps (mid-epoch 1), then resume with the saved config
    first = train(
        load_config("tiny_cpu", tiny_overrides(tmp_path / "b", *base, "run.stop_after_steps=3")),
        dataset=_data(),
        show_progress=False,
    )
    assert not first.finished and first.global_step == 3 and first.epoch == 1
    assert (
        json.loads((tmp_path / "b" / "summary.json").read_text(encoding="utf-8"))["status"]
        == "stopped"
    )
    with open(tmp_path / "b" / "log.jsonl", "a") as fh:  # logged after the checkpoint, then killed
        fh.write(json.dumps({"step": 4, "loss": -1.0}) + "\n")
    resumed = train(
        load_config(tmp_path / "b" / "config.yaml", ["run.stop_after_steps=null"]),
        dataset=_data(),
        resume=True,
        show_progress=False,
    )
    assert resumed.finished and resumed.global_step == full.global_step == 6
    log = [
        json.loads(x)
        for x in (tmp_path / "b" / "log.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6] and log[3]["loss"] > 0
    assert _max_diff(_state(full.checkpoint), _state(resumed.checkpoint)) == 0.0
    full_losses = [h["loss"] for h in full.history]
    assert [h["loss"] for h in resumed.history] == pytest.approx(full_losses[3:], abs=1e-6)
    a = torch.load(full.checkpoint, weights_only=True)["optimizer_state_dict"]
    b = torch.load(resumed.checkpoint, weights_only=True)["optimizer_state_dict"]
    assert a["state"][0]["step"] == b["state"][0]["step"]
    torch.testing.assert_close(a["state"][0]["exp_avg_sq"], b["state"][0]["exp_avg_sq"])


def test_run_folder_rules(tmp_path):
    cfg = load_config("tiny_cpu", tiny_overrides(tmp_path, "train.epochs=1"))
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(cfg, dataset=_data(), resume=True, show_progress=False)
    train(cfg, dataset=_data(), show_progress=False)
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train(cfg, dataset=_data(), show_progress=False)
    # resuming a finished run is a no-op that reports it
    again = train(cfg, dataset=_data(), resume=True, show_progress=False)
    assert again.finished and again.global_step == 2


def test_init_checkpoint_errors(tmp_path):
    cfg = load_config(
        "tiny_cpu", tiny_overrides(tmp_path / "r1", f"model.init_checkpoint={tmp_path}/no.pth")
    )
    with pytest.raises(FileNotFoundError, match="init checkpoint not found"):
        train(cfg, dataset=_data(), show_progress=False)
    other = save_checkpoint(build_model("sam_med3d_small"), tmp_path / "small.pth")
    cfg = load_config("tiny_cpu", tiny_overrides(tmp_path / "r2", f"model.init_checkpoint={other}"))
    with pytest.raises(CheckpointError, match="small.pth does not fit the model: it was saved"):
        train(cfg, dataset=_data(), show_progress=False)
    not_a_ckpt = tmp_path / "junk.pth"
    torch.save({"model_state_dict": {"foo.weight": torch.zeros(2)}}, not_a_ckpt)
    cfg = load_config(
        "tiny_cpu", tiny_overrides(tmp_path / "r3", f"model.init_checkpoint={not_a_ckpt}")
    )
    with pytest.raises(CheckpointError):
        train(cfg, dataset=_data(), show_progress=False)
    cfg = load_config("tiny_cpu", tiny_overrides(tmp_path / "r4", "model.require_init=true"))
    with pytest.raises(ConfigError, match="refusing to train from scratch"):
        train(cfg, dataset=_data(), show_progress=False)
    assert not (tmp_path / "r1" / "checkpoints").exists()


def test_finetune_from_published_format_with_frozen_encoder(tmp_path):
    torch.manual_seed(123)
    pretrained = build_model("sam_med3d_tiny")
    published = export_published(pretrained, tmp_path / "published.pth")
    assert set(torch.load(published, weights_only=True)) == {"model_state_dict"}
    cfg = load_config(
        "tiny_cpu",
        tiny_overrides(
            tmp_path / "ft",
            f"model.init_checkpoint={published}",
            "model.freeze_image_encoder=true",
            "train.epochs=1",
        ),
    )
    result = train(cfg, dataset=_data(), show_progress=False)
    before, after = pretrained.state_dict(), _state(result.checkpoint)
    frozen = [k for k in before if k.startswith("image_encoder.")]
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert not torch.equal(
        before["mask_decoder.output_upscaling.0.weight"],
        after["mask_decoder.output_upscaling.0.weight"],
    )
    untrained = never_trained_parameters(pretrained)
    assert all(torch.equal(before[k], after[k]) for k in untrained)


def test_fp16_on_cpu_is_a_config_error(tmp_path):
    cfg = load_config("tiny_cpu", tiny_overrides(tmp_path, "train.amp=fp16"))
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        train(cfg, dataset=_data(), show_progress=False)


def test_too_small_dataset_is_a_config_error(tmp_path):
    cfg = load_config("tiny_cpu", tiny_overrides(tmp_path, "train.batch_size=8"))
    with pytest.raises(ConfigError, match="too few for one optimizer step"):
        train(cfg, dataset=_data(), show_progress=False)


def test_options_run(tmp_path):
    """Deviations from the published regime run: per-batch z-score, accumulation, clipping,
    accumulated clicks, bf16 autocast on CPU."""
    cfg = load_config(
        "tiny_cpu",
        tiny_overrides(
            tmp_path,
            "train.epochs=1",
            "train.batch_size=1",
            "train.accumulation_steps=2",
            "data.normalization=per_batch",
            "optim.grad_clip=1.0",
            "train.accumulate_clicks=true",
            "train.amp=bf16",
        ),
    )
    result = train(cfg, dataset=_data(), show_progress=False)
    assert result.finished and result.global_step == 2
    assert all(torch.isfinite(v).all() for v in _state(result.checkpoint).values())


def test_dataloader_workers_do_not_change_the_result(tmp_path):
    runs = []
    for workers in (0, 2):
        cfg = load_config(
            "tiny_cpu",
            tiny_overrides(
                tmp_path / f"w{workers}", "train.epochs=2", f"data.num_workers={workers}"
            ),
        )
        runs.append(train(cfg, dataset=_data(), show_progress=False))
    assert _max_diff(_state(runs[0].checkpoint), _state(runs[1].checkpoint)) == 0.0


class _SigtermAt(SyntheticDataset):
    """Sends SIGTERM when a given sample is loaded (a cluster pre-emption); with ``group``,
    from a DataLoader worker to itself and to the main process, as a scheduler signalling the
    whole process group does."""

    def __init__(self, at: tuple[int, int], group: bool = False) -> None:
        super().__init__(4, 64, seed=1)
        self.at = at
        self.group = group

    def __getitem__(self, key):
        if key == self.at:
            if self.group:
                os.kill(os.getppid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
        return super().__getitem__(key)


def test_sigterm_checkpoints_and_stops(tmp_path):
    cfg = load_config(
        "tiny_cpu", tiny_overrides(tmp_path, "train.epochs=3", "run.save_every_steps=100")
    )
    previous = signal.getsignal(signal.SIGTERM)
    sampler_first = [i for _, i in _epoch_keys(4, epoch=1)][0]
    result = train(cfg, dataset=_SigtermAt((1, sampler_first)), show_progress=False)
    assert signal.getsignal(signal.SIGTERM) == previous  # handler restored
    assert not result.finished and result.global_step == 3  # the step in flight completes
    assert result.checkpoint == tmp_path / "checkpoints" / "step_00000003.pth"
    assert (
        json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))["status"] == "stopped"
    )


def test_sigterm_to_the_process_group_with_workers_checkpoints(tmp_path):
    cfg = load_config(
        "tiny_cpu",
        tiny_overrides(
            tmp_path, "train.epochs=3", "run.save_every_steps=100", "data.num_workers=1"
        ),
    )
    sampler_first = [i for _, i in _epoch_keys(4, epoch=1)][0]
    result = train(cfg, dataset=_SigtermAt((1, sampler_first), group=True), show_progress=False)
    assert not result.finished  # stopped with a checkpoint instead of "worker killed"
    assert result.checkpoint is not None and result.checkpoint.is_file()
    assert (
        json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))["status"] == "stopped"
    )


def _epoch_keys(n: int, epoch: int) -> list[tuple[int, int]]:
    from sammed3d.training.data import EpochDistributedSampler

    sampler = EpochDistributedSampler(list(range(n)), seed=2023)
    sampler.set_epoch(epoch)
    return list(sampler)


def test_resume_with_a_changed_learning_rate(tmp_path):
    base = ["train.epochs=3", "optim.milestones=[2]", "run.stop_after_steps=3"]
    train(
        load_config("tiny_cpu", tiny_overrides(tmp_path, *base)),
        dataset=_data(),
        show_progress=False,
    )
    cfg = load_config(tmp_path / "config.yaml", ["run.stop_after_steps=null", "optim.lr=5e-4"])
    result = train(cfg, dataset=_data(), resume=True, show_progress=False)
    lrs = {h["step"]: h["lr"] for h in result.history}
    assert lrs[4]["image_encoder"] == pytest.approx(5e-4)  # epoch 1
    assert lrs[5]["image_encoder"] == pytest.approx(5e-5)  # epoch 2, after the milestone
    assert lrs[5]["mask_decoder"] == pytest.approx(5e-6)
    with pytest.raises(ConfigError, match="optimizer state does not fit"):
        cfg = load_config(tmp_path / "config.yaml", ["model.freeze_image_encoder=true"])
        train(cfg, dataset=_data(), resume=True, show_progress=False)


#: Two schedules with warm-up: milestones at epochs 1 and 2 / cosine to 10 % (2 steps per epoch).
SCHEDULES = {
    "multistep": ["optim.milestones=[1,2]", "optim.warmup_steps=3"],
    "cosine": ["optim.schedule=cosine", "optim.warmup_steps=2", "optim.min_lr_ratio=0.1"],
}


@pytest.mark.filterwarnings("error:Detected call of:UserWarning")
@pytest.mark.parametrize(("schedule", "stop"), [("multistep", 2), ("cosine", 3)])
def test_a_resumed_run_has_the_learning_rates_of_an_uninterrupted_one(tmp_path, schedule, stop):
    """Stopped after the last step of epoch 0 (the resumed process closes that epoch before its
    first optimizer step, and must not step the scheduler there) or mid-epoch 1."""
    base = ["train.epochs=3", "run.save_every_steps=100", "data.random_shift=0"]
    base += SCHEDULES[schedule]
    full = train(
        load_config("tiny_cpu", tiny_overrides(tmp_path / "a", *base)),
        dataset=_data(),
        show_progress=False,
    )
    first = train(
        load_config(
            "tiny_cpu", tiny_overrides(tmp_path / "b", *base, f"run.stop_after_steps={stop}")
        ),
        dataset=_data(),
        show_progress=False,
    )
    resumed = train(
        load_config(tmp_path / "b" / "config.yaml", ["run.stop_after_steps=null"]),
        dataset=_data(),
        resume=True,
        show_progress=False,
    )
    lrs = [h["lr"] for h in full.history]
    assert [h["lr"] for h in first.history + resumed.history] == lrs  # exactly
    assert _max_diff(_state(full.checkpoint), _state(resumed.checkpoint)) == 0.0
    # the rates each step used: warm-up times the schedule, decoder at 0.1 x
    if schedule == "multistep":
        expected = [1e-3 / 3, 2e-3 / 3, 1e-4, 1e-4, 1e-5, 1e-5]  # epochs 0, 1, 2
    else:
        cosine = [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / 6)) for s in range(6)]
        expected = [1e-3 * min(1.0, (s + 1) / 2) * cosine[s] for s in range(6)]
    assert [r["image_encoder"] for r in lrs] == pytest.approx(expected, rel=1e-12)
    assert [r["mask_decoder"] for r in lrs] == pytest.approx([0.1 * x for x in expected])


class _NaNImages(SyntheticDataset):
    def __getitem__(self, key):
        sample = super().__getitem__(key)
        sample["image"] = torch.full_like(sample["image"], float("nan"))
        return sample


def test_non_finite_loss_stops_training(tmp_path):
    cfg = load_config("tiny_cpu", tiny_overrides(tmp_path, "train.epochs=1"))
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        train(cfg, dataset=_NaNImages(4, 64, seed=1), show_progress=False)


def test_warmup_scales_the_first_steps(tmp_path):
    cfg = load_config(
        "tiny_cpu", tiny_overrides(tmp_path, "train.epochs=3", "optim.warmup_steps=4")
    )
    result = train(cfg, dataset=_data(), show_progress=False)
    lrs = [h["lr"]["image_encoder"] for h in result.history]
    assert lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])


GENERATED = [
    "model.name=sam_med3d_tiny_dense",
    "data.synthetic_per_epoch=4",
    "data.targets_per_crop=2",
    "train.loss_resolution=low",
    "train.accumulate_clicks=true",
    "train.detach_mask_prompt=true",
    "train.click_threshold=0.0",
    "train.mask_only_random=null",
    "train.mask_only_last=false",
    "train.first_click_weight=2.0",
    "train.center_click_fraction=0.5",
    "optim.schedule=cosine",
    "optim.no_decay_norms_embeddings=true",
    "optim.weight_decay=0.05",
    "train.epochs=2",
    "run.save_every_steps=100",
]


def test_generated_data_run_with_our_options(tmp_path):
    cfg = load_config("tiny_cpu", tiny_overrides(tmp_path / "run", *GENERATED))
    result = train(cfg, show_progress=False)
    assert result.finished and result.global_step == 4
    lr = [h["lr"] for h in result.history]
    # every top-level module trains, with and without weight decay, on one cosine schedule
    assert {
        "image_encoder",
        "image_encoder.no_decay",
        "hires_encoder",
        "mask_decoder.no_decay",
    } <= set(lr[0])
    steps = [r["image_encoder"] for r in lr]
    assert steps == sorted(steps, reverse=True) and steps[-1] < steps[0]
    ckpt = torch.load(result.checkpoint, weights_only=True)
    groups = ckpt["optimizer_state_dict"]["param_groups"]
    assert {g["weight_decay"] for g in groups if g["name"].endswith(".no_decay")} == {0.0}
    assert {g["weight_decay"] for g in groups if not g["name"].endswith(".no_decay")} == {0.05}
    model = load_checkpoint(result.checkpoint)
    assert model.config.click_maps and model.config.hires_channels == 4


def test_generated_data_resume_and_on_device_generation_are_exact(tmp_path):
    full = train(
        load_config("tiny_cpu", tiny_overrides(tmp_path / "a", *GENERATED)), show_progress=False
    )
    first = train(
        load_config(
            "tiny_cpu", tiny_overrides(tmp_path / "b", *GENERATED, "run.stop_after_steps=1")
        ),
        show_progress=False,
    )
    assert not first.finished
    resumed = train(
        load_config(tmp_path / "b" / "config.yaml", ["run.stop_after_steps=null"]),
        resume=True,
        show_progress=False,
    )
    assert resumed.global_step == full.global_step
    assert _max_diff(_state(full.checkpoint), _state(resumed.checkpoint)) == 0.0
    # the same crops drawn in the training loop (GPU path) instead of in the data loader
    deferred = train(
        load_config(
            "tiny_cpu", tiny_overrides(tmp_path / "c", *GENERATED, "data.generate_on_device=true")
        ),
        show_progress=False,
    )
    assert _max_diff(_state(full.checkpoint), _state(deferred.checkpoint)) == 0.0


def test_time_based_checkpoints_and_stop(tmp_path):
    cfg = load_config(
        "tiny_cpu",
        tiny_overrides(
            tmp_path / "run",
            *GENERATED,
            "run.save_every_minutes=1e-6",
            "run.stop_after_minutes=1e-6",
        ),
    )
    result = train(cfg, show_progress=False)
    assert not result.finished and result.global_step == 1  # stopped after the first step
    assert result.checkpoint is not None and result.checkpoint.exists()


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.targets_per_crop=0", "data.targets_per_crop"),
        ("data.anatomy_fraction=0.5", "data.anatomy"),
        ("optim.min_lr_ratio=0", "optim.min_lr_ratio"),
        ("train.center_click_fraction=2", "train.center_click_fraction"),
        ("run.save_every_minutes=0", "run.save_every_minutes"),
        ("train.loss_resolution=half", "train.loss_resolution"),
        ("train.centre_first_click=1.5", "train.centre_first_click"),
        ("train.iou_loss_weight=-1", "train.iou_loss_weight"),
        ("train.leak_prompt_fraction=-0.1", "train.leak_prompt_fraction"),
        ("train.leak_prompt_max_fraction=0.01", "train.leak_prompt_max_fraction"),
        ("data.anatomy_structure_fraction=1.5", "data.anatomy_structure_fraction"),
        ("data.anatomy_structure_fraction=0.5", "data.anatomy_fraction > 0"),
        ("data.anatomy_structure_clicks=inner", "data.anatomy_structure_clicks"),
    ],
)
def test_option_config_errors(tmp_path, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("tiny_cpu", tiny_overrides(tmp_path / "run", *GENERATED, override))


def test_leak_prompts_need_the_low_resolution_loss(tmp_path):
    overrides = (*GENERATED, "train.loss_resolution=full", "train.leak_prompt_fraction=0.3")
    with pytest.raises(ConfigError, match=r"needs train\.loss_resolution=low"):
        load_config("tiny_cpu", tiny_overrides(tmp_path / "run", *overrides))


def test_generated_data_files_must_exist(tmp_path):
    cfg = load_config(
        "tiny_cpu",
        tiny_overrides(tmp_path / "run", *GENERATED, f"data.shape_bank={tmp_path}/no.npz"),
    )
    with pytest.raises(FileNotFoundError, match="no.npz"):
        train(cfg, show_progress=False)


@pytest.mark.parametrize(
    "structures, extra, message",
    [
        # no structures map at all
        (None, (), "needs a 'structures' map in .*anatomy.npz"),
        # innermost clicks, checked with the option the run uses: bit 1 is bit 0 again, so it
        # has no voxel of its own
        (
            0b11,
            ("data.anatomy_structure_clicks=innermost",),
            "bit 1 lies entirely inside smaller structures",
        ),
    ],
)
def test_structure_targets_are_checked_before_training(tmp_path, structures, extra, message):
    path = tmp_path / "anatomy.npz"
    tissue = np.zeros((8, 8, 8), dtype=np.uint8)
    tissue[2:6, 2:6, 2:6] = 2
    arrays = {"image": tissue.astype(np.float32), "tissue": tissue}
    if structures is not None:
        arrays["structures"] = (tissue > 0).astype(np.uint8) * structures
    np.savez(path, **arrays)
    overrides = (
        *GENERATED,
        f"data.anatomy={path}",
        "data.anatomy_fraction=0.5",
        "data.anatomy_structure_fraction=0.5",
        *extra,
    )
    cfg = load_config("tiny_cpu", tiny_overrides(tmp_path / "run", *overrides))
    with pytest.raises(ConfigError, match=message):
        train(cfg, show_progress=False)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a zip file", r"data\.anatomy must be an \.npz file .*cannot read"),
        ("only_image", r"has no tissue array"),
        ("bad_shape", r"data\.anatomy .*structures must have the image's shape"),
    ],
)
def test_anatomy_file_must_be_an_npz_with_image_and_tissue(tmp_path, content, message):
    path = tmp_path / "anatomy.npz"
    image = np.zeros((4, 4, 4), dtype=np.float32)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "only_image":
        np.savez(path, image=image)
    else:
        tissue = np.ones((4, 4, 4), dtype=np.uint8)
        np.savez(path, image=image, tissue=tissue, structures=tissue[:-1])
    overrides = (*GENERATED, f"data.anatomy={path}", "data.anatomy_fraction=0.5")
    cfg = load_config("tiny_cpu", tiny_overrides(tmp_path / "run", *overrides))
    with pytest.raises(ConfigError, match=message):
        train(cfg, show_progress=False)


def test_negative_click_similarity_is_set_by_the_config_and_recorded(tmp_path):
    overrides = [*GENERATED, "train.epochs=1", "model.negative_click_similarity=false"]
    result = train(
        load_config("tiny_cpu", tiny_overrides(tmp_path / "neg", *overrides)), show_progress=False
    )
    assert not load_checkpoint(result.checkpoint).negative_click_similarity
    # a model without click maps has no such channel: a one-line error, before any step
    plain = tiny_overrides(tmp_path / "plain", *overrides, "model.name=sam_med3d_tiny")
    with pytest.raises(ConfigError, match="negative_click_similarity needs a model with click"):
        train(load_config("tiny_cpu", plain), show_progress=False)


def test_first_click_multimask_from_an_init_checkpoint(tmp_path):
    torch.manual_seed(5)
    start = build_model("sam_med3d_tiny_dense")
    init = save_checkpoint(start, tmp_path / "init.pth")
    overrides = [*GENERATED, "train.epochs=1", "train.first_click_multimask=true"]
    cfg = load_config(
        "tiny_cpu", tiny_overrides(tmp_path / "mm", *overrides, f"model.init_checkpoint={init}")
    )
    result = train(cfg, show_progress=False)
    trained = load_checkpoint(result.checkpoint)
    assert trained.first_click_multimask and trained.config.first_click_multimask
    before, after = start.state_dict(), trained.state_dict()
    # the IoU head and outputs 1..3 train; no_mask_embed (never used by click-map models) not
    for key in ("mask_decoder.iou_prediction_head.layers.0.weight",
                "mask_decoder.output_hypernetworks_mlps.2.layers.0.weight"):  # fmt: skip
        assert not torch.equal(before[key], after[key]), key
    assert torch.equal(
        before["prompt_encoder.no_mask_embed.weight"], after["prompt_encoder.no_mask_embed.weight"]
    )
    # a resumed run keeps recording it
    resumed = train(
        load_config("tiny_cpu", tiny_overrides(tmp_path / "mm", *overrides, "train.epochs=2")),
        resume=True,
        show_progress=False,
    )
    assert resumed.global_step > result.global_step
    assert load_checkpoint(resumed.checkpoint).first_click_multimask
    # the published regime on the same start records the published behaviour
    plain = train(
        load_config(
            "tiny_cpu",
            tiny_overrides(
                tmp_path / "plain", *GENERATED, "train.epochs=1", f"model.init_checkpoint={init}"
            ),  # fmt: skip
        ),
        show_progress=False,
    )
    assert not load_checkpoint(plain.checkpoint).first_click_multimask
