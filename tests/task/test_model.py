"""The task model: shapes, skip features from encoder blocks, frozen encoder, the spec."""

from __future__ import annotations

import pytest
import torch

from sammed3d.build import build_model, get_config
from sammed3d.task.model import TaskModel, TaskSpec, default_skip_blocks

from .conftest import tiny_spec, tiny_task_model


def test_output_shape_and_channels():
    model = tiny_task_model()
    out = model(torch.randn(2, 1, 64, 64, 64))
    assert out.shape == (2, 3, 64, 64, 64) and torch.isfinite(out).all()


@pytest.mark.parametrize(("depth", "blocks"), [(12, (3, 6, 9)), (4, (1, 2, 3)), (2, (0, 1, 1))])
def test_default_skip_blocks(depth, blocks):
    assert default_skip_blocks(depth) == blocks


def test_skip_features_are_the_block_outputs_and_the_encoder_is_unchanged():
    model = tiny_task_model(seed=1)
    x = torch.randn(1, 1, 64, 64, 64)
    seen = {}

    def spy(image, skips, bottleneck):
        seen.update(skips=skips, bottleneck=bottleneck)
        return torch.zeros(1)

    model.decoder.forward = spy  # type: ignore[method-assign]
    with torch.no_grad():
        model(x)
        enc = model.image_encoder
        tokens = enc.patch_embed(x) + enc.pos_embed
        outputs = []
        for block in enc.blocks:
            tokens = block(tokens)
            outputs.append(tokens.permute(0, 4, 1, 2, 3))
        plain = build_model("sam_med3d_tiny").image_encoder
        plain.load_state_dict(enc.state_dict())
        expected_bottleneck = plain(x)
    for got, index in zip(seen["skips"], model.spec.skip_blocks, strict=True):
        torch.testing.assert_close(got, outputs[index])
    torch.testing.assert_close(seen["bottleneck"], expected_bottleneck)
    assert model._captured == {}  # nothing kept between calls
    torch.testing.assert_close(enc(x), expected_bottleneck)  # hooks do not change the encoder


def test_frozen_encoder_gets_no_gradient():
    model = tiny_task_model().train()
    model.freeze_encoder = True
    model(torch.randn(1, 1, 64, 64, 64)).mean().backward()
    assert all(p.grad is None for p in model.image_encoder.parameters())
    assert all(p.grad is not None for p in model.decoder.parameters())
    model.zero_grad(set_to_none=True)
    model.freeze_encoder = False
    model(torch.randn(1, 1, 64, 64, 64)).mean().backward()
    assert model.image_encoder.patch_embed.proj.weight.grad is not None


def test_wrong_input_shape_is_one_line():
    with pytest.raises(ValueError, match=r"expected patches of shape \(B, 1, 64, 64, 64\)"):
        tiny_task_model()(torch.randn(1, 1, 32, 64, 64))


def test_vit_b_shapes():
    """The released ViT-B encoder (768 wide, 12 blocks, windowed) under a UNETR decoder."""
    spec = TaskSpec(get_config("sam_med3d_turbo"), ("a", "b", "c"), decoder_features=2)
    model = TaskModel(spec).eval()
    assert spec.skip_blocks == (3, 6, 9)
    seen = {}
    original = model.decoder.forward

    def spy(image, skips, bottleneck):
        seen.update(skips=[s.shape for s in skips], bottleneck=bottleneck.shape)
        return original(image, skips, bottleneck)

    model.decoder.forward = spy  # type: ignore[method-assign]
    with torch.inference_mode():
        out = model(torch.randn(1, 1, 128, 128, 128))
    assert seen["skips"] == [(1, 768, 8, 8, 8)] * 3
    assert seen["bottleneck"] == (1, 384, 8, 8, 8)
    assert out.shape == (1, 4, 128, 128, 128)


def test_spec_round_trip_and_validation():
    spec = tiny_spec(encoder_origin={"init": "checkpoint", "sha256": "ab"}, modality="CT")
    assert TaskSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="at least one class"):
        tiny_spec(classes=())
    with pytest.raises(ValueError, match="distinct"):
        tiny_spec(classes=("a", "a"))
    with pytest.raises(ValueError, match="16\\^3 patches"):
        TaskSpec(get_config({"img_size": 64, "patch_size": 8}), ("a",))
    with pytest.raises(ValueError, match="unknown task spec keys"):
        TaskSpec.from_dict({**spec.to_dict(), "extra": 1})
    assert spec.padding == "minimum" and spec.to_dict()["padding"] == "minimum"
    older = {k: v for k, v in spec.to_dict().items() if k != "padding"}
    assert TaskSpec.from_dict(older).padding == "zero"  # trained before it was recorded
    with pytest.raises(ValueError, match="padding must be one of"):
        tiny_spec(padding="mean")
