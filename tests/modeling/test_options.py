"""Our model options: clicks as dense maps (``click_maps``) and the high-res path."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from tests.conftest import randomize_

from sammed3d import ModelConfig, build_model
from sammed3d.build import MODEL_REGISTRY, infer_config, load_checkpoint, save_checkpoint
from sammed3d.modeling import ImageEmbedding, draw_click_maps

# The registered test model with our options, narrower decoder heads (a different shape).
TINY_OPTIONS = replace(
    MODEL_REGISTRY["sam_med3d_tiny_dense"], decoder_mlp_dim=64, iou_head_hidden_dim=16
)


@pytest.fixture()
def option_model():
    return randomize_(build_model(TINY_OPTIONS)).eval()


def test_click_maps_place_each_click_in_its_channel():
    coords = torch.tensor([[[10.0, 20.0, 30.0], [40.0, 8.0, 50.0], [0.0, 0.0, 0.0]]])
    labels = torch.tensor([[1, 0, -1]])
    maps = draw_click_maps(coords, labels, size=64, img_size=64, batch=1)
    assert maps.shape == (1, 2, 64, 64, 64)
    # the peak of each channel is at its click, in tensor-axis order (no axis swap)
    pos = torch.nonzero(maps[0, 0] == maps[0, 0].max())[0].tolist()
    neg = torch.nonzero(maps[0, 1] == maps[0, 1].max())[0].tolist()
    assert pos == [10, 20, 30] and neg == [40, 8, 50]
    assert float(maps[0, 0].max()) == pytest.approx(1.0)
    # padding clicks (label -1) draw nothing: the (0, 0, 0) corner stays empty
    assert float(maps[0, :, 0, 0, 0].max()) < 1e-3
    # on a coarser grid a cell holds the value at its centre
    coarse = draw_click_maps(coords, labels, size=16, img_size=64, batch=1)
    assert coarse.shape == (1, 2, 16, 16, 16)
    assert torch.nonzero(coarse[0, 0] == coarse[0, 0].max())[0].tolist() == [2, 5, 7]


def test_click_similarity_is_one_at_the_click_and_zero_without_clicks():
    from sammed3d.modeling.hires import click_similarity

    feats = torch.randn(1, 8, 8, 8, 4)
    feats[0, :4] = 0.0  # a uniform region: everything there looks like the click
    coords = torch.tensor([[[4.0, 8.0, 12.0], [40.0, 40.0, 40.0]]])  # 64-voxel input, 8^3 grid
    sim = click_similarity(feats, coords, torch.tensor([[1, -1]]), img_size=64)
    assert sim.shape == (1, 2, 8, 8, 8)
    assert float(sim[0, 0, 0, 1, 1]) == pytest.approx(1.0)
    assert torch.allclose(sim[0, 0, :4], torch.ones(4, 8, 8))
    assert float(sim[0, 0, 4:].max()) < 1.0
    assert not sim[0, 1].any()  # no negative click


def test_click_similarity_cache_gives_the_same_maps_and_keeps_a_bounded_number():
    from sammed3d.modeling import hires

    feats = torch.randn(1, 8, 8, 8, 4)
    cache: dict = {}
    clicks = [[4.0, 8.0, 12.0], [40.0, 40.0, 40.0], [60.0, 2.0, 30.0], [33.0, 17.0, 9.0]]
    labels = [1, 0, 1, -1]
    for n in range(1, len(clicks) + 1):  # a refinement adds one click at a time
        coords = torch.tensor([clicks[:n]])
        lab = torch.tensor([labels[:n]])
        plain = hires.click_similarity(feats, coords, lab, img_size=64)
        cached = hires.click_similarity(feats, coords, lab, img_size=64, cache=cache)
        assert torch.equal(plain, cached)
    assert len(cache) == 1 + 3  # the feature norms and the three signed clicks' cells
    # the oldest maps go first, the norms stay
    many = torch.tensor([[[8.0 * (i % 8), 8.0 * (i // 8 % 8), 8.0 * (i // 64)] for i in range(80)]])
    hires.click_similarity(feats, many, torch.ones(1, 80, dtype=torch.long), 64, cache=cache)
    assert len(cache) == hires.SIMILARITY_MAPS_KEPT + 1
    assert (-1, -1, -1) in cache and (7, 1, 1) in cache and (0, 0, 0) not in cache
    # a batch of images is computed without the cache
    two = torch.randn(2, 8, 8, 8, 4)
    coords = torch.tensor([[clicks[0]], [clicks[1]]])
    ones = torch.ones(2, 1, dtype=torch.long)
    out = hires.click_similarity(two, coords, ones, 64, cache={})
    assert torch.equal(out, hires.click_similarity(two, coords, ones, 64))


def test_hires_head_outside_autograd_gives_the_values_of_the_autograd_path(monkeypatch):
    from sammed3d.modeling import hires

    monkeypatch.setattr(hires, "HEAD_CHUNK_CELLS", 1000)  # several chunks, a partial last one
    torch.manual_seed(0)
    head = hires.HiResHead(transformer_dim=16, channels=4)
    coarse = torch.randn(2, 3, 8, 8, 8)
    tokens = torch.randn(2, 3, 16)
    features = torch.randn(1, 16, 16, 16, 4)  # one image's features for a batch of prompts
    maps = torch.randn(2, 5, 16, 16, 16)
    with torch.enable_grad():
        expected = head(coarse, tokens, features, maps)
    assert expected.requires_grad
    with torch.no_grad():
        chunked = head(coarse, tokens, features, maps)
    assert chunked.shape == (2, 3, 16, 16, 16)
    torch.testing.assert_close(chunked, expected.detach(), rtol=1e-6, atol=1e-6)


def test_decode_reuses_the_similarity_maps_of_earlier_clicks(option_model):
    with torch.inference_mode():
        emb = option_model.encode(torch.randn(1, 1, 64, 64, 64))
        coords = torch.tensor([[[10.0, 20.0, 30.0], [40.0, 8.0, 50.0]]])
        labels = torch.tensor([[1, 0]])
        low, _ = option_model.decode(emb, coords[:, :1], labels[:, :1], None)
        assert len(emb.similarity_maps) == 2  # norms and the first click's map
        again, _ = option_model.decode(emb, coords, labels, low)
        assert len(emb.similarity_maps) == 3
        fresh, _ = option_model.decode(ImageEmbedding(emb.tokens, emb.hires), coords, labels, low)
        assert torch.equal(again, fresh)
    # under autograd (training) nothing is kept
    emb = option_model.encode(torch.randn(1, 1, 64, 64, 64))
    option_model.decode(emb, coords, labels, None)
    assert not emb.similarity_maps


def test_click_maps_without_clicks_are_zero():
    maps = draw_click_maps(None, None, size=8, img_size=64, batch=3)
    assert maps.shape == (3, 2, 8, 8, 8) and not maps.any()


def test_option_model_shapes_and_state_dict(option_model):
    keys = option_model.state_dict()
    assert keys["prompt_encoder.mask_downscaling.0.weight"].shape[1] == 5
    assert any(k.startswith("hires_encoder.") for k in keys)
    assert any(k.startswith("mask_decoder.hires_head.") for k in keys)
    assert option_model.low_res_size == (32, 32, 32)  # 2 x the published 16^3 of a 64 input
    assert option_model.accumulates_clicks
    with torch.inference_mode():
        emb = option_model.encode(torch.randn(2, 1, 64, 64, 64))
        assert isinstance(emb, ImageEmbedding)
        assert emb.tokens.shape == (2, 48, 4, 4, 4) and emb.hires.shape == (2, 32, 32, 32, 4)
        coords = torch.tensor([[[10.0, 20.0, 30.0]], [[5.0, 6.0, 7.0]]])
        labels = torch.ones(2, 1, dtype=torch.long)
        low, iou = option_model.decode(emb, coords, labels, None)
        assert low.shape == (2, 1, 32, 32, 32) and iou.shape == (2, 1)
        low2, _ = option_model.decode(emb, coords, labels, low)
        assert low2.shape == low.shape
        assert option_model.upsample_logits(low).shape == (2, 1, 64, 64, 64)


def test_clicks_change_the_prediction_through_the_dense_maps(option_model):
    """With click maps the first-click mask depends on where the click is, spatially."""
    with torch.inference_mode():
        emb = option_model.encode(torch.randn(1, 1, 64, 64, 64))
        labels = torch.ones(1, 1, dtype=torch.long)
        a, _ = option_model.decode(emb, torch.tensor([[[10.0, 10.0, 10.0]]]), labels, None)
        b, _ = option_model.decode(emb, torch.tensor([[[50.0, 50.0, 50.0]]]), labels, None)
        option_model.prompt_encoder.mask_downscaling[0].weight.data[:, 1:] = 0
        option_model.mask_decoder.hires_head.map_weight.data[:, 2:] = 0
        c, _ = option_model.decode(emb, torch.tensor([[[10.0, 10.0, 10.0]]]), labels, None)
    assert not torch.allclose(a, b)
    assert not torch.allclose(a, c)  # the maps (not only the point tokens) reach the output


def test_hires_model_needs_its_embedding(option_model):
    with torch.inference_mode():
        tokens = option_model.image_encoder(torch.randn(1, 1, 64, 64, 64))
        with pytest.raises(ValueError, match="high-res path"):
            option_model.decode(tokens, torch.zeros(1, 1, 3), torch.ones(1, 1), None)


def test_every_option_parameter_gets_a_gradient(option_model):
    option_model.train()
    emb = option_model.encode(torch.randn(1, 1, 64, 64, 64))
    coords = torch.tensor([[[10.0, 20.0, 30.0], [40.0, 5.0, 50.0]]])
    labels = torch.tensor([[1, 0]])
    low, _ = option_model.decode(emb, coords, labels, torch.randn(1, 1, 32, 32, 32))
    low.square().mean().backward()
    new = [n for n, _ in option_model.named_parameters() if "hires" in n or "mask_downscaling" in n]
    missing = [
        n
        for n, p in option_model.named_parameters()
        if n in new and (p.grad is None or not p.grad.any())
    ]
    assert new and missing == []


def test_options_roundtrip_through_checkpoints(option_model, tmp_path):
    path = save_checkpoint(option_model, tmp_path / "opt.pth")
    loaded = load_checkpoint(path)
    assert loaded.config == TINY_OPTIONS
    # files without a config (bare state dicts) get the options back from the shapes
    assert infer_config(option_model.state_dict()) == TINY_OPTIONS
    x = torch.randn(1, 1, 64, 64, 64)
    with torch.inference_mode():
        a = option_model.decode(option_model.encode(x), torch.ones(1, 1, 3), torch.ones(1, 1), None)
        b = loaded.decode(loaded.encode(x), torch.ones(1, 1, 3), torch.ones(1, 1), None)
    assert torch.equal(a[0], b[0])


def test_published_defaults_have_no_options():
    cfg = ModelConfig()
    assert not cfg.click_maps and cfg.hires_channels == 0
    model = build_model("sam_med3d_tiny")
    assert not model.accumulates_clicks and model.hires_encoder is None
    assert not any("hires" in k for k in model.state_dict())


def test_without_negative_click_similarity_only_negative_clicks_change(option_model, tmp_path):
    """``negative_click_similarity=False`` zeroes one channel: a prediction from positive
    clicks only is unchanged, one with a negative click is not; files record the choice."""
    without = build_model(replace(TINY_OPTIONS, negative_click_similarity=False))
    without.load_state_dict(option_model.state_dict())
    without.eval()
    assert option_model.negative_click_similarity and not without.negative_click_similarity
    x = torch.randn(1, 1, 64, 64, 64)
    positive = (torch.tensor([[[20.0, 30.0, 40.0]]]), torch.ones(1, 1, dtype=torch.long))
    mixed = (torch.tensor([[[20.0, 30.0, 40.0], [44.0, 10.0, 12.0]]]), torch.tensor([[1, 0]]))
    prev = torch.randn(1, 1, 32, 32, 32)
    with torch.inference_mode():
        emb = option_model.encode(x)
        for coords, labels in (positive, mixed):
            a, _ = option_model.decode(emb, coords, labels, prev)
            b, _ = without.decode(emb, coords, labels, prev)
            assert torch.equal(a, b) == (labels == 1).all().item()
    # the choice travels with the weights, and the architecture still matches
    path = save_checkpoint(without, tmp_path / "noneg.pth")
    assert not load_checkpoint(path).negative_click_similarity
    assert not build_model(TINY_OPTIONS, path).negative_click_similarity
    assert build_model(TINY_OPTIONS).negative_click_similarity


@pytest.mark.parametrize(
    "bad",
    [
        {"hires_channels": -1},
        {"hires_channels": 2.5},
        {"click_maps": 1},
        {"negative_click_similarity": "no"},
        {"zoom_spacing": -1.0},
        {"zoom_spacing": float("nan")},
        {"zoom_spacing": True},
        {"fine_zoom_spacing": -0.5},
        {"fine_zoom_spacing": float("inf")},
        {"fine_zoom_spacing": "0.5"},
        {"refine_boundary": -1.0},
        {"refine_boundary": float("inf")},
        {"refine_boundary": "3"},
        {"contrast_guard": -0.1},
        {"contrast_guard": 11.0},
        {"first_pick": "best"},
        {"first_pick": None},
        {"later_check": "edge"},
        {"later_check": None},
        {"rim_edit": -3.0},
        {"rim_edit": 12.0},
        {"rim_edit": "3"},
        {"click_bounds": "positive"},
        {"click_bounds": None},
    ],
)
def test_bad_option_values(bad):
    with pytest.raises(ValueError):
        ModelConfig(**bad)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("zoom_spacing", 1.0),
        ("refine_boundary", 3.0),
        ("contrast_guard", 0.4),
        ("fine_zoom_spacing", 0.5),
        ("rim_edit", 3.0),
    ],
)
def test_inference_options_travel_with_the_weights(option_model, tmp_path, option, value):
    """Behaviours chosen after training (zoom-in, boundary refinement, contrast veto of the
    first-click pick): recorded in the file,
    not part of the architecture (a model without them loads the same weights), off for
    published defaults."""
    assert getattr(ModelConfig(), option) == 0.0
    option_model.config = replace(TINY_OPTIONS, **{option: value})
    path = save_checkpoint(option_model, tmp_path / f"{option}.pth")
    assert getattr(load_checkpoint(path).config, option) == value
    assert getattr(build_model(TINY_OPTIONS, path).config, option) == value
    assert getattr(build_model(TINY_OPTIONS).config, option) == 0.0


@pytest.mark.parametrize(
    ("option", "default", "value"),
    [
        ("first_pick", "model", "edges"),
        ("later_check", "none", "edges"),
        ("click_bounds", "none", "negative"),
    ],
)
def test_the_rule_choices_travel_with_the_weights(option_model, tmp_path, option, default, value):
    """The edge pick, the edge check and the click bounds (rules chosen or tried after
    training): recorded in the file; the model's own ranking / no check / no bounds for
    published defaults and files without them."""
    assert getattr(ModelConfig(), option) == default
    option_model.config = replace(TINY_OPTIONS, **{option: value})
    path = save_checkpoint(option_model, tmp_path / f"{option}.pth")
    assert getattr(load_checkpoint(path).config, option) == value
    assert getattr(build_model(TINY_OPTIONS, path).config, option) == value
    assert getattr(build_model(TINY_OPTIONS).config, option) == default
