"""Parity with the project's reference fixtures in ``../shared/fixtures`` (random weights).

The fixtures (outputs of the published repository's own modules for the ``sam_med3d_small``
geometry) live outside the repository, so every test here skips with a reason on a plain
clone; the same comparisons run everywhere against the published network built by ``medim``
(tests/modeling/test_medim_parity.py). Where the fixtures are present, this module also checks
that medim's network reproduces them, i.e. that medim is the published network.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sammed3d import ModelConfig, load_checkpoint

TOL = 1e-4


@pytest.fixture(scope="module")
def cases(fixtures_dir):
    return dict(np.load(fixtures_dir / "sammed3d_small_cases.npz"))


@pytest.fixture(scope="module")
def model(fixtures_dir):
    return load_checkpoint(fixtures_dir / "sammed3d_small.pth")


def test_loaded_config_matches_fixture(model, fixtures_dir):
    expected = json.loads((fixtures_dir / "sammed3d_small.json").read_text(encoding="utf-8"))[
        "config"
    ]
    got = model.config.to_dict()
    for key, value in expected.items():
        assert got[key] == value, key


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_image_embedding(model, cases, impl):
    model.image_encoder.set_attn_impl(impl)
    try:
        with torch.inference_mode():
            emb = model.image_encoder(torch.from_numpy(cases["image"]))
    finally:
        model.image_encoder.set_attn_impl("fast")
    diff = (emb - torch.from_numpy(cases["image_embedding"])).abs().max().item()
    assert diff <= TOL


def test_dense_pe(model, cases):
    pe = model.prompt_encoder.get_dense_pe()
    assert (pe - torch.from_numpy(cases["dense_pe"])).abs().max().item() <= TOL


def _steps(cases):
    n = 0
    while f"step{n}_point_coords" in cases:
        n += 1
    assert n >= 5
    return range(n)


def test_prompt_and_decoder_steps(model, cases):
    emb = torch.from_numpy(cases["image_embedding"])  # decoder parity independent of encoder
    pe = model.prompt_encoder.get_dense_pe()
    seen_none, seen_multi = False, False
    for s in _steps(cases):
        p = f"step{s}_"
        coords = torch.from_numpy(cases[p + "point_coords"])
        labels = torch.from_numpy(cases[p + "point_labels"])
        mask_in = cases[p + "mask_input"]
        mask = None if mask_in.size == 0 else torch.from_numpy(mask_in)
        seen_none |= mask is None
        multi = bool(cases[p + "multimask_output"])
        seen_multi |= multi
        with torch.inference_mode():
            sparse, dense = model.prompt_encoder(points=(coords, labels), boxes=None, masks=mask)
            low, iou = model.mask_decoder(
                image_embeddings=emb,
                image_pe=pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multi,
            )
            up = model.upsample_logits(low[:, :1])
        exp_low = torch.from_numpy(cases[p + "low_res_logits"])
        assert sparse.shape == cases[p + "sparse_embeddings"].shape
        assert (sparse - torch.from_numpy(cases[p + "sparse_embeddings"])).abs().max() <= TOL
        assert (dense - torch.from_numpy(cases[p + "dense_embeddings"])).abs().max() <= TOL
        assert low.shape == exp_low.shape
        assert (low - exp_low).abs().max() <= TOL, f"step {s}"
        assert (iou - torch.from_numpy(cases[p + "iou_predictions"])).abs().max() <= TOL
        # Binary masks identical except where the reference logit is within TOL of 0.
        ref_up = torch.nn.functional.interpolate(
            exp_low[:, :1], size=up.shape[2:], mode="trilinear", align_corners=False
        )
        exp_mask = torch.from_numpy(cases[p + "mask_binary"])
        differ = (up > 0) != exp_mask
        assert not (differ & (ref_up.abs() > TOL)).any(), f"step {s}"
    assert seen_none and seen_multi


def test_full_chain_from_image(model, cases):
    """Encoder (fast) -> first step, end to end, against the stored low-res logits."""
    with torch.inference_mode():
        emb = model.image_encoder(torch.from_numpy(cases["image"]))
        low, _ = model.decode(
            emb,
            torch.from_numpy(cases["step0_point_coords"]),
            torch.from_numpy(cases["step0_point_labels"]),
            torch.from_numpy(cases["step0_mask_input"]),
        )
    assert (low - torch.from_numpy(cases["step0_low_res_logits"])).abs().max() <= TOL


def test_medim_reproduces_fixtures(medim, fixtures_dir, cases):
    """medim's builder with the fixture config and weights gives the stored outputs."""
    config = json.loads((fixtures_dir / "sammed3d_small.json").read_text(encoding="utf-8"))
    published = medim.build(ModelConfig.from_dict(config["config"]))
    state = torch.load(fixtures_dir / "sammed3d_small.pth", weights_only=True)
    published.load_state_dict(state["model_state_dict"], strict=True)
    with torch.inference_mode():
        emb = published.image_encoder(torch.from_numpy(cases["image"]))
        assert (emb - torch.from_numpy(cases["image_embedding"])).abs().max() <= TOL
        pe = published.prompt_encoder.get_dense_pe()
        assert (pe - torch.from_numpy(cases["dense_pe"])).abs().max() <= TOL
        emb = torch.from_numpy(cases["image_embedding"])
        for s in _steps(cases):
            p = f"step{s}_"
            mask_in = cases[p + "mask_input"]
            sparse, dense = published.prompt_encoder(
                points=(
                    torch.from_numpy(cases[p + "point_coords"]),
                    torch.from_numpy(cases[p + "point_labels"]),
                ),
                boxes=None,
                masks=None if mask_in.size == 0 else torch.from_numpy(mask_in),
            )
            low, iou = published.mask_decoder(
                image_embeddings=emb,
                image_pe=pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=bool(cases[p + "multimask_output"]),
            )
            for got, key in ((sparse, "sparse_embeddings"), (dense, "dense_embeddings"),
                             (low, "low_res_logits"), (iou, "iou_predictions")):  # fmt: skip
                expected = torch.from_numpy(cases[p + key])
                assert got.shape == expected.shape and (got - expected).abs().max() <= TOL, key
            # Binary masks identical except where the stored logit is within TOL of 0.
            up, ref_up = (
                torch.nn.functional.interpolate(
                    x[:, :1], size=(128, 128, 128), mode="trilinear", align_corners=False
                )
                for x in (low, torch.from_numpy(cases[p + "low_res_logits"]))
            )
            differ = (up > 0) != torch.from_numpy(cases[p + "mask_binary"])
            assert not (differ & (ref_up.abs() > TOL)).any(), f"step {s}: binary mask"


def test_medim_vit_b_has_the_released_keys(medim, fixtures_dir):
    rows = (fixtures_dir / "sammed3d_vitb_state_dict_keys.tsv").read_text(encoding="utf-8")
    expected = [tuple(row.split("\t")) for row in rows.strip().splitlines()[1:]]
    with torch.device("meta"):
        published = medim.build(ModelConfig()).state_dict()
    assert [(k, str(tuple(v.shape))) for k, v in published.items()] == expected
