"""Whole-model tests: shapes, gradients, configs, prompt-encoder quirk C."""

from __future__ import annotations

import pytest
import torch
from tests.conftest import randomize_

from sammed3d import ModelConfig, build_model


def test_tiny_shapes(tiny_model):
    x = torch.randn(2, 1, 64, 64, 64)
    with torch.inference_mode():
        emb = tiny_model.image_encoder(x)
        assert emb.shape == (2, 48, 4, 4, 4)
        coords = torch.tensor([[[10.0, 20.0, 30.0], [5.0, 5.0, 5.0]]] * 2)
        labels = torch.tensor([[1, 0]] * 2)
        prev = torch.zeros(2, 1, 16, 16, 16)
        low, iou = tiny_model.decode(emb, coords, labels, prev)
        assert low.shape == (2, 1, 16, 16, 16) and iou.shape == (2, 1)
        low3, iou3 = tiny_model.decode(emb, coords, labels, prev, multimask_output=True)
        assert low3.shape == (2, 3, 16, 16, 16) and iou3.shape == (2, 3)
        # mask-only prompt (the training regime's point-free iterations)
        low0, _ = tiny_model.decode(emb, None, None, prev)
        assert low0.shape == (2, 1, 16, 16, 16)
        assert tiny_model.upsample_logits(low).shape == (2, 1, 64, 64, 64)
    assert tiny_model.low_res_size == (16, 16, 16)


def test_single_embedding_broadcasts_to_prompt_batch(tiny_model):
    with torch.inference_mode():
        emb = tiny_model.image_encoder(torch.randn(1, 1, 64, 64, 64))
        coords = torch.rand(3, 1, 3) * 64
        labels = torch.ones(3, 1, dtype=torch.long)
        low, _ = tiny_model.decode(emb, coords, labels, torch.zeros(3, 1, 16, 16, 16))
        single, _ = tiny_model.decode(emb, coords[1:2], labels[1:2], torch.zeros(1, 1, 16, 16, 16))
    assert low.shape[0] == 3
    assert torch.allclose(low[1:2], single, atol=1e-5)


def test_every_parameter_gets_a_gradient(tiny_model):
    tiny_model.train()
    x = torch.randn(1, 1, 64, 64, 64)
    emb = tiny_model.image_encoder(x)
    coords = torch.tensor([[[10.0, 20.0, 30.0], [40.0, 5.0, 50.0]]])
    labels = torch.tensor([[1, 0]])
    sparse, dense = tiny_model.prompt_encoder(
        points=(coords, labels), boxes=None, masks=torch.randn(1, 1, 16, 16, 16)
    )
    _, dense_none = tiny_model.prompt_encoder(points=None, boxes=None, masks=None)
    pe = tiny_model.prompt_encoder.get_dense_pe()
    masks, iou = tiny_model.mask_decoder.predict_masks(emb, pe, sparse, dense + dense_none)
    loss = masks.square().mean() + iou.square().mean()
    loss.backward()
    missing = [n for n, p in tiny_model.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in tiny_model.parameters())


def test_box_prompts_rejected(tiny_model):
    with pytest.raises(NotImplementedError, match="box prompts"):
        tiny_model.prompt_encoder(points=None, boxes=torch.zeros(1, 6), masks=None)


def test_quirk_c_point_vs_dense_axes(tiny_model):
    """Point PE of voxel (a, b, c) equals the dense PE of cell (b//p, a//p, c//p)."""
    pe_layer = tiny_model.prompt_encoder.pe_layer
    dense = pe_layer((4, 4, 4))  # (C, 4, 4, 4)
    p = 16
    a, b, c = 1, 2, 3  # cell indices
    voxel = torch.tensor([[[a * p + 7.5, b * p + 7.5, c * p + 7.5]]])  # cell centre
    point = pe_layer.forward_with_coords(voxel + 0.5, (64, 64, 64))[0, 0]
    assert torch.allclose(point, dense[:, b, a, c], atol=1e-5)
    assert not torch.allclose(point, dense[:, a, b, c], atol=1e-3)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"encoder_embed_dim": 100, "encoder_num_heads": 12}, "divisible by encoder_num_heads=12"),
        ({"prompt_embed_dim": 100}, "prompt_embed_dim=100 must be divisible by 3"),
        ({"img_size": 120, "patch_size": 16}, "patch_size=16 must divide img_size=120"),
        ({"encoder_global_attn_indexes": (12,)}, r"\[12\] out of range"),
        ({"encoder_depth": 0}, "encoder_depth must be a positive integer"),
    ],
)
def test_bad_configs(kw, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**kw)


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model 'vit_h'"):
        build_model("vit_h")


def test_config_dict_round_trip():
    cfg = ModelConfig(encoder_embed_dim=96, encoder_num_heads=4, prompt_embed_dim=96)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({**cfg.to_dict(), "embed": 1})


def test_randomized_tiny_is_deterministic():
    a = randomize_(build_model("sam_med3d_tiny"), seed=1)
    b = randomize_(build_model("sam_med3d_tiny"), seed=1)
    x = torch.randn(1, 1, 64, 64, 64)
    with torch.inference_mode():
        assert torch.equal(a.image_encoder(x), b.image_encoder(x))


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((1, 1, 32, 32, 32), (128, 128, 128)),
        ((2, 3, 5, 4, 3), (10, 12, 3)),
        ((1, 1, 4, 5, 6), (7, 9, 13)),
    ],
)
def test_upsample_trilinear_matches_interpolate(shape, size):
    from sammed3d.modeling.common import upsample_trilinear

    x = torch.randn(*shape) * 5
    ref = torch.nn.functional.interpolate(x, size=size, mode="trilinear", align_corners=False)
    torch.testing.assert_close(upsample_trilinear(x, size), ref, rtol=0, atol=2e-5)
    # outside autograd (in place) and under it (differentiable): the same values
    with torch.no_grad():
        fast = upsample_trilinear(x, size)
    y = x.clone().requires_grad_(True)
    slow = upsample_trilinear(y, size)
    assert slow.requires_grad and torch.equal(fast, slow.detach())
    slow.sum().backward()
    assert y.grad is not None and y.grad.shape == x.shape


@pytest.mark.parametrize("shape", [(1, 2, 1, 4, 3), (1, 1, 7, 1, 1)])
def test_upsample_trilinear_of_a_single_voxel_axis_repeats_it(shape):
    from sammed3d.modeling.common import upsample_trilinear

    x = torch.randn(*shape)
    size = tuple(2 * n for n in shape[2:])
    ref = torch.nn.functional.interpolate(x, size=size, mode="trilinear", align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(upsample_trilinear(x, size), ref, rtol=0, atol=2e-5)
