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
    image_path, atlas_path, names = demo_assets()
    image, atlas = read_volume(image_path), read_volume(atlas_path)
    assert image.shape == atlas.shape
    np.testing.assert_allclose(image.affine, atlas.affine, atol=1e-4)
    assert image.spacing == pytest.approx((1.5, 1.5, 1.5))
    assert len(names) == 116
    present = set(np.unique(atlas.array)) - {0}
    assert {names[s] for s in DEFAULT_STRUCTURES} <= present
    # RAS sanity: "_L" structures lie at smaller x (left) than their "_R" twins
    for base in ("Hippocampus", "Caudate", "Putamen"):
        xl = np.argwhere(atlas.array == names[f"{base}_L"])[:, 0].mean()
        xr = np.argwhere(atlas.array == names[f"{base}_R"])[:, 0].mean()
        assert (image.affine[0, 0] * xl) < (image.affine[0, 0] * xr)


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
        tmp_path / "out", checkpoint=tiny_ckpt, structures=["Thalamus_R", "Caudate_L"], extend=False
    )
    assert [r.name for r in result.structures] == ["Thalamus_R", "Caudate_L"]
    assert result.structures[1].held_out_category
    labels = read_volume(result.label_map)
    image_path, _, _ = demo_assets()
    assert labels.shape == read_volume(image_path).shape
    assert set(np.unique(labels.array)) <= {0, 1, 2}
    summary = json.loads(result.summary.read_text(encoding="utf-8"))
    assert summary["label_values"] == {"Thalamus_R": 1, "Caudate_L": 2}
    assert result.figure.stat().st_size > 10_000
    for r in result.structures:
        assert 0.0 <= r.dice <= 1.0


def test_demo_cli_unknown_structure(capsys, tiny_ckpt, tmp_path):
    code = main(
        ["demo", "--checkpoint", str(tiny_ckpt), "--structures", "Nose", "-o", str(tmp_path)]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown structure(s) ['Nose']") and "\n" not in err


def test_demo_cli_missing_checkpoint(capsys, tmp_path):
    code = main(["demo", "--checkpoint", str(tmp_path / "nope.pth"), "-o", str(tmp_path)])
    assert code == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_bundled_weights_are_the_demo_model():
    from sammed3d import MODEL_REGISTRY, load_checkpoint
    from sammed3d.paths import BUNDLED_CHECKPOINT

    assert BUNDLED_CHECKPOINT.is_file()
    assert BUNDLED_CHECKPOINT.stat().st_size <= 25 * 2**20
    model = load_checkpoint(BUNDLED_CHECKPOINT)
    assert model.config == MODEL_REGISTRY["sam_med3d_demo"]
    assert model.metadata["global_step"] > 0
