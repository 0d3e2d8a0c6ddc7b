"""The optimizer groups and the one learning-rate rule (warm-up x schedule x base rate)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from sammed3d.training import load_config
from sammed3d.training.optim import (
    apply_optim_config,
    base_lr,
    build_optimizer,
    build_scheduler,
    lr_factor,
    no_decay_names,
)


class _Model(nn.Module):
    """The top-level modules of a SAM-Med3D model, each a few parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.image_encoder = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
        self.prompt_encoder = nn.Embedding(3, 4)
        self.mask_decoder = nn.Linear(4, 2)


def _cfg(*overrides: str):
    return load_config("tiny_cpu", ["optim.lr=1e-3", "optim.decoder_lr_scale=0.1", *overrides])


def test_lr_factor_multistep_counts_the_milestones_reached():
    o = _cfg("optim.milestones=[2,2,5]", "optim.gamma=0.5").optim
    factors = [lr_factor(o, step=0, epoch=e, total_steps=100) for e in range(7)]
    assert factors == [1.0, 1.0, 0.25, 0.25, 0.25, 0.125, 0.125]  # a repeated milestone twice


def test_lr_factor_warmup_and_cosine():
    o = _cfg("optim.schedule=cosine", "optim.warmup_steps=4", "optim.min_lr_ratio=0.1").optim
    f = [lr_factor(o, step=s, epoch=0, total_steps=10) for s in range(12)]
    assert f[0] == pytest.approx(0.25 * 1.0) and f[3] == pytest.approx(
        0.55 + 0.45 * math.cos(0.3 * math.pi)
    )
    assert f[5] == pytest.approx(0.55) and f[10] == f[11] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[3:], f[4:], strict=False))


def test_base_rates_of_the_groups():
    cfg = _cfg("optim.no_decay_norms_embeddings=true")
    opt = build_optimizer(_Model(), cfg)
    rates = {g["name"]: g["lr"] for g in opt.param_groups}
    assert rates == {
        "image_encoder": 1e-3,
        "image_encoder.no_decay": 1e-3,
        "prompt_encoder.no_decay": pytest.approx(1e-4),
        "mask_decoder": pytest.approx(1e-4),
        "mask_decoder.no_decay": pytest.approx(1e-4),
    }
    assert all(base_lr(cfg, g) == g["lr"] for g in opt.param_groups)
    assert {g["weight_decay"] for g in opt.param_groups if g["name"].endswith(".no_decay")} == {0.0}
    assert no_decay_names(_Model().prompt_encoder) == {"weight"}  # an embedding
    task = load_config("tiny_cpu", ["task.kind=semantic", "task.layer_decay=0.5", "optim.lr=1e-3"])
    assert base_lr(task, {"name": "encoder_decay3", "lr_exponent": 3}) == pytest.approx(1.25e-4)


def _steps(opt: torch.optim.Optimizer, sched, n: int) -> list[float]:
    """Rates of ``n`` optimizer steps (each followed by a scheduler step)."""
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize(
    "overrides",
    [
        ["optim.milestones=[1,2]", "optim.warmup_steps=3"],
        ["optim.schedule=cosine", "optim.warmup_steps=2", "optim.min_lr_ratio=0.1"],
    ],
)
def test_a_scheduler_built_at_step_k_continues_the_sequence(overrides):
    """Built from the config at step k (as on resume), the scheduler gives exactly the rates an
    uninterrupted one reaches by stepping, with no step before an optimizer step."""
    cfg = _cfg("train.epochs=3", *overrides)
    per_epoch = 3

    def epoch_of(step: int) -> int:
        return step // per_epoch

    opt = build_optimizer(_Model(), cfg)
    total = cfg.train.epochs * per_epoch
    sched = build_scheduler(opt, cfg, total_steps=total, start_step=0, epoch_of_step=epoch_of)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        full = _steps(opt, sched, total)
        for k in range(total):
            again = build_optimizer(_Model(), cfg)
            again.load_state_dict(opt.state_dict())  # the end state: rates are not read
            apply_optim_config(again, cfg)
            resumed = build_scheduler(
                again, cfg, total_steps=total, start_step=k, epoch_of_step=epoch_of
            )
            assert _steps(again, resumed, total - k) == full[k:]
    o = cfg.optim
    expected = [
        lr_factor(o, step=s, epoch=epoch_of(s), total_steps=total) * 1e-3 for s in range(total)
    ]
    assert full == pytest.approx(expected, rel=1e-15)


def test_apply_optim_config_sets_the_current_settings():
    opt = build_optimizer(_Model(), _cfg("optim.weight_decay=0.1"))
    changed = _cfg("optim.weight_decay=0.02", "optim.betas=[0.8,0.9]")
    apply_optim_config(opt, changed)
    assert {g["weight_decay"] for g in opt.param_groups} == {0.02}
    assert {g["betas"] for g in opt.param_groups} == {(0.8, 0.9)}
