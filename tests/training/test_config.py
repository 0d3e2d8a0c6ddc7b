"""Typed training config: published defaults, YAML/overrides, unknown keys and bad types."""

from __future__ import annotations

import pytest
import yaml

from sammed3d.training.config import (
    PACKAGED_CONFIGS,
    ConfigError,
    TrainingConfig,
    load_config,
    packaged_config_path,
    parse_override,
    save_config,
)


def test_defaults_are_the_published_regime():
    cfg = TrainingConfig()
    assert cfg.model.name == "sam_med3d"
    assert cfg.train.num_clicks == 11
    assert cfg.train.mask_only_random == [2, 8]  # randint(2, 9)
    assert cfg.train.mask_only_last is True
    assert cfg.train.accumulate_clicks is False
    assert cfg.train.detach_mask_prompt is False
    assert cfg.train.click_threshold == 0.5
    assert (cfg.train.batch_size, cfg.train.accumulation_steps, cfg.train.epochs) == (12, 20, 200)
    assert cfg.optim.lr == 8e-4 and cfg.optim.decoder_lr_scale == 0.1
    assert cfg.optim.weight_decay == 0.1 and cfg.optim.betas == [0.9, 0.999]
    assert cfg.optim.milestones == [120, 180] and cfg.optim.gamma == 0.1
    assert cfg.data.target_spacing == [1.5, 1.5, 1.5] and cfg.data.ct_clamp == [-1000, 1000]
    assert cfg.data.flip_prob == 0.5 and cfg.data.random_shift == 0
    assert cfg.train.seed == 2023


def test_default_yaml_spells_out_the_dataclass_defaults():
    assert load_config("default") == TrainingConfig()
    assert load_config(None) == TrainingConfig()


@pytest.mark.parametrize("name", PACKAGED_CONFIGS)
def test_packaged_configs_load(name):
    assert packaged_config_path(name).exists()
    cfg = load_config(name)
    assert isinstance(cfg, TrainingConfig)


def test_finetune_config_requires_init_and_uses_finetune_lr():
    cfg = load_config("finetune_turbo")
    assert cfg.model.name == "sam_med3d_turbo" and cfg.model.require_init
    assert cfg.optim.lr == 8e-5 and cfg.train.batch_size == 2


def test_finetune_default_is_the_bundled_models_regime_on_labelled_data():
    """Every training option of default_model.yaml but its generated data and schedule."""
    ft, dm = load_config("finetune_default"), load_config("default_model")
    assert ft.model.name == dm.model.name == "sam_med3d_demo" and ft.model.require_init
    assert ft.data.synthetic_per_epoch == 0 and ft.data.targets_per_crop == 1
    assert ft.data.shape_bank is None and ft.data.anatomy_fraction == 0
    schedule = {"epochs", "seed"}
    assert {k: v for k, v in vars(ft.train).items() if k not in schedule} == {
        k: v for k, v in vars(dm.train).items() if k not in schedule
    }
    for key in ("weight_decay", "schedule", "min_lr_ratio", "grad_clip"):
        assert getattr(ft.optim, key) == getattr(dm.optim, key)
    assert ft.optim.lr < dm.optim.lr


def test_overrides_are_typed():
    cfg = load_config(
        "tiny_cpu",
        [
            "optim.lr=8e-5",
            "data.roots=[/data/a, /data/b]",
            "optim.grad_clip=1",
            "train.mask_only_random=null",
            "train.amp=bf16",
        ],
    )
    assert cfg.optim.lr == pytest.approx(8e-5) and isinstance(cfg.optim.lr, float)
    assert cfg.data.roots == ["/data/a", "/data/b"]
    assert cfg.optim.grad_clip == 1.0 and isinstance(cfg.optim.grad_clip, float)
    assert cfg.train.mask_only_random is None
    assert cfg.train.amp == "bf16"


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("optim.lrr=1", r"unknown config key\(s\) \['optim.lrr'\]"),
        ("nosection.x=1", r"unknown config key\(s\) \['nosection'\]"),
        ("train.epochs=1.5", "train.epochs must be an integer"),
        ("train.epochs=0", "train.epochs must be >= 1"),
        ("train.amp=fp8", "train.amp must be one of"),
        ("data.roots=/data/a", "data.roots must be a list"),
        ("train.mask_only_random=[0, 2]", "click 0 always has a point"),
        ("model.freeze_image_encoder=yes please", "must be true/false"),
        ("optim.milestones=[5, 2]", "increasing"),
    ],
)
def test_bad_overrides_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config("tiny_cpu", [override])


def test_unknown_key_in_yaml_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  batch_size: 2\n  num_click: 5\n")
    with pytest.raises(ConfigError, match=r"train.num_click"):
        load_config(path)


def test_yaml_exponent_without_dot_is_a_number(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 8e-5\n")  # PyYAML reads this as a string
    assert load_config(path).optim.lr == pytest.approx(8e-5)


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_override_syntax():
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("lr")
    with pytest.raises(ConfigError, match="section.key"):
        parse_override("lr=1")


def test_saved_config_round_trips(tmp_path):
    cfg = load_config("tiny_cpu", ["optim.lr=3e-4", "data.roots=[/x]"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(path) == cfg
    assert yaml.safe_load(path.read_text(encoding="utf-8"))["optim"]["lr"] == pytest.approx(3e-4)
