"""``sammed3d demo`` and the bundled demo assets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sammed3d import build_model, save_checkpoint
from sammed3d.cli import main
from sammed3d.demo import DEFAULT_STRUCTURES, demo_assets, interior_click, run_demo
from sammed3d.io import read_volume


def test_bundled_assets_are_consistent():
    image_path, labels_path, names = demo_assets()
    image, labels = read_volume(image_path), read_volume(labels_path)
    assert image.shape == labels.shape
    np.testing.assert_allclose(image.affine, labels.affine, atol=1e-4)
    assert image.spacing == pytest.approx((1.5, 1.5, 1.5))
    assert set(DEFAULT_STRUCTURES) <= set(names)
    masks = {name: np.isin(labels.array, values) for name, values in names.items()}
    # nested as in the anatomy: white matter and ventricles lie inside the brain
    assert not (masks["white_matter"] & ~masks["whole_brain"]).any()
    assert not (masks["lateral_ventricles"] & ~masks["whole_brain"]).any()
    # plausible sizes at 1.5 mm (3.375 mm^3 per voxel): brain ~1-1.8 l, ventricles 5-60 ml
    ml = {name: m.sum() * 3.375 / 1000 for name, m in masks.items()}
    assert 1000 < ml["whole_brain"] < 1800
    assert 300 < ml["white_matter"] < ml["whole_brain"]
    assert 5 < ml["lateral_ventricles"] < 60
    # the ventricles are dark on T1, the white matter bright
    img = image.array.astype(float)
    assert img[masks["lateral_ventricles"]].mean() < 0.6 * img[masks["white_matter"]].mean()


def test_interior_click_is_deepest_voxel():
    mask = np.zeros((20, 20, 20), bool)
    mask[2:15, 5:10, 5:10] = True
    click = interior_click(mask, (1.0, 1.0, 1.0))
    assert mask[click]
    assert click[1] == 7 and click[2] == 7  # centre of the thin axes


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    return save_checkpoint(build_model("sam_med3d_tiny"), path)


def test_demo_runs_end_to_end(tmp_path, tiny_ckpt):
    result = run_demo(
        tmp_path / "out",
        checkpoint=tiny_ckpt,
        structures=["lateral_ventricles", "white_matter"],
        clicks=2,
        extend=False,
    )
    assert [r.name for r in result.structures] == ["lateral_ventricles", "white_matter"]
    labels = read_volume(result.label_map)
    image_path, _, _ = demo_assets()
    assert labels.shape == read_volume(image_path).shape
    assert set(np.unique(labels.array)) <= {0, 1, 2}
    summary = json.loads(result.summary.read_text(encoding="utf-8"))
    assert summary["label_values"] == {"lateral_ventricles": 1, "white_matter": 2}
    assert summary["written_by"] == "sammed3d demo"
    assert len(summary["mean_dice_per_click"]) == 2
    assert result.figure.stat().st_size > 10_000
    for r in result.structures:
        assert len(r.clicks) == 2 and len(r.dice) == 2
        assert all(0.0 <= d <= 1.0 for d in r.dice)
        assert r.clicks[0][3] is True  # the first click is positive


def test_demo_cli(tmp_path, tiny_ckpt, capsys):
    out = tmp_path / "cli"
    args = ["demo", "-o", str(out), "--checkpoint", str(tiny_ckpt), "--no-extend", "--clicks", "1"]
    assert main([*args, "--structures", "lateral_ventricles"]) == 0
    text = capsys.readouterr().out
    assert "lateral_ventricles" in text and "label map" in text
    # a folder the demo wrote is refreshed without --overwrite; anything else is protected
    assert main([*args, "--structures", "lateral_ventricles"]) == 0
    other = tmp_path / "other"
    other.mkdir()
    (other / "demo_labels.nii.gz").write_bytes(b"user data")
    assert main(["demo", "-o", str(other), "--checkpoint", str(tiny_ckpt), "--clicks", "1"]) == 2
    assert (other / "demo_labels.nii.gz").read_bytes() == b"user data"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--structures", "Hippocampus_L"], "unknown structure"),
        (["--clicks", "0"], "--clicks must be >= 1"),
        (["--max-rois", "0"], "--max-rois must be >= 1, got 0"),
    ],
)
def test_demo_bad_input(tmp_path, tiny_ckpt, capsys, args, message):
    code = main(["demo", "-o", str(tmp_path / "x"), "--checkpoint", str(tiny_ckpt), *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_bundled_default_model_is_registered():
    from sammed3d import MODEL_REGISTRY, load_checkpoint
    from sammed3d.paths import BUNDLED_CHECKPOINT

    model = load_checkpoint(BUNDLED_CHECKPOINT)
    assert model.config == MODEL_REGISTRY["sam_med3d_demo"]
    assert model.accumulates_clicks and model.hires_encoder is not None
    assert BUNDLED_CHECKPOINT.stat().st_size < 50 * 2**20


def test_bundled_default_model_first_masks_contain_their_clicks(tmp_path):
    """The demo as a user runs it: every first mask contains the voxel that was clicked."""
    result = run_demo(tmp_path / "out", clicks=1, extend=False)
    assert [r.name for r in result.structures] == list(DEFAULT_STRUCTURES)
    assert all(r.first_click_in_mask for r in result.structures)
    for r in result.structures:  # the first click's other extents, the pick among them
        assert len(r.extents) >= 2 and [e["picked"] for e in r.extents].count(True) == 1
        volumes = [e["volume_ml"] for e in r.extents]
        assert volumes == sorted(volumes)
        picked = next(e for e in r.extents if e["picked"])
        assert picked["dice"] == pytest.approx(r.dice[0])


@pytest.mark.parametrize("radius", [6, 12, 20])
def test_bundled_default_model_segments_a_sphere_in_noise(radius):
    """The check a new user tries first: one click in a bright ball in noise (1.5 mm voxels).

    The model never saw this volume; intensity region growing solves it, so a model that
    segments "the object under the click" must too (the old bundled model put a small blob
    beside the click: Dice 0.17 with the click outside its mask at radius 6).
    """
    from sammed3d.inference import InteractiveSession, SamMed3DPredictor
    from sammed3d.io import Volume

    rng = np.random.default_rng(0)
    grid = np.indices((96, 96, 96))
    ball = ((grid - 48) ** 2).sum(0) <= radius**2
    image = (100 + 400 * ball + rng.normal(0, 40, ball.shape)).astype(np.float32)
    session = InteractiveSession(SamMed3DPredictor.from_checkpoint(None))
    session.set_image(Volume(image, spacing=(1.5, 1.5, 1.5)))
    mask = session.add_point((48, 48, 48), positive=True) > 0
    dice = 2 * (mask & ball).sum() / (mask.sum() + ball.sum())
    assert mask[48, 48, 48]
    assert dice > 0.7, f"Dice {dice:.3f} on a ball of radius {radius} voxels"


def test_demo_cli_missing_checkpoint(capsys, tmp_path):
    code = main(["demo", "--checkpoint", str(tmp_path / "nope.pth"), "-o", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "not found" in err and "\n" not in err


def test_demo_refuses_to_write_inside_the_package(tiny_ckpt, capsys):
    assets = demo_assets()[0].parent
    before = sorted(p.name for p in assets.iterdir())
    assert main(["demo", "-o", str(assets), "--checkpoint", str(tiny_ckpt), "--clicks", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "lies inside the installed sammed3d package" in err and "\n" not in err
    assert sorted(p.name for p in assets.iterdir()) == before
