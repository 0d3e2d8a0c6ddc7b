"""``sammed3d export``: its counts agree with ``info``; a run folder is taken as everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sammed3d import save_checkpoint
from sammed3d.cli import main
from sammed3d.io import Volume, write_volume


@pytest.fixture()
def run(tmp_path: Path, tiny_model: torch.nn.Module) -> Path:
    """A training run folder as ``sammed3d train`` leaves it."""
    folder = tmp_path / "run"
    save_checkpoint(tiny_model, folder / "checkpoints" / "final.pth")
    return folder


def test_export_counts_parameters_as_info_does(
    run: Path, tmp_path: Path, tiny_model: torch.nn.Module, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = str(run / "checkpoints" / "final.pth")
    assert main(["info", "--json", "--checkpoint", ckpt]) == 0
    params = json.loads(capsys.readouterr().out)["checkpoint"]["parameters"]
    assert params == sum(p.numel() for p in tiny_model.parameters()) == 421_498
    assert main(["export", ckpt, str(tmp_path / "out.pth")]) == 0
    out = capsys.readouterr().out
    state = tiny_model.state_dict()  # what the file holds: parameters and saved buffers
    buffers = sum(v.numel() for v in state.values()) - params
    tensors = len(state)
    assert f"({params:,} parameters + {buffers:,} buffer values ({tensors} tensors))" in out
    assert "values)" not in out.replace("buffer values (", "")  # no unexplained total


def test_every_command_takes_the_run_folder_export_takes(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    final = run / "checkpoints" / "final.pth"
    assert main(["export", str(run), str(tmp_path / "e.pth")]) == 0
    assert f"exported {final}" in capsys.readouterr().out
    assert main(["info", "--json", "--checkpoint", str(run)]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoint"]["path"] == str(final)
    image = 100 + 20 * np.random.default_rng(0).random((24, 24, 16), np.float32)
    image[8:16, 8:16, 4:12] += 400
    img = write_volume(Volume(image, (1.0, 1.0, 1.0)), tmp_path / "img.nii.gz")
    out = tmp_path / "mask.nii.gz"
    argv = ["segment", str(img), "-p", "12", "12", "8", "-o", str(out), "--checkpoint", str(run)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert f"loaded {final}" in captured.out and out.exists()
    assert main(["weights", "verify", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["file"] == str(final)
    # a folder that is no run: the same one-line refusal from every command
    empty = tmp_path / "empty"
    empty.mkdir()
    for argv in (
        ["export", str(empty), str(tmp_path / "x.pth")],
        ["info", "--checkpoint", str(empty)],
        ["segment", str(img), "-p", "12", "12", "8", "-o", str(out), "--checkpoint", str(empty)],
    ):
        assert main([*argv, "--overwrite"] if argv[0] == "segment" else argv) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("error: no checkpoint in run folder") and "final.pth" in err


def test_our_settings_survive_export_and_weights_only_says_what_it_drops(tmp_path, capsys):
    """The bundled model's first-click and inference settings live in its config, which a
    bare state dict cannot hold: export keeps config and metadata next to model_state_dict
    (published loaders read only that key), so loading the file gives the same model;
    --weights-only writes the bare layout and names on stderr what is lost."""
    from sammed3d.build import load_checkpoint, read_checkpoint

    bundled = read_checkpoint("default")
    kept = tmp_path / "kept.pth"
    assert main(["export", "default", str(kept)]) == 0
    out = capsys.readouterr().out
    assert "kept model_config and metadata" in out and "first_click_multimask" in out
    assert "only sammed3d loads it" in out  # click maps and a high-res path
    raw = torch.load(kept, map_location="cpu", weights_only=True)
    assert {"model_state_dict", "model_config", "metadata"} <= set(raw)
    again = read_checkpoint(kept)
    assert again.config == bundled.config and again.config.to_dict() == bundled.config.to_dict()
    assert again.metadata == bundled.metadata
    assert all(torch.equal(again.state_dict[k], v) for k, v in bundled.state_dict.items())

    bare = tmp_path / "bare.pth"
    assert main(["export", "default", str(bare), "--weights-only"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: --weights-only left out") and "first_click_multimask" in err
    assert set(torch.load(bare, map_location="cpu", weights_only=True)) == {"model_state_dict"}
    assert load_checkpoint(bare).config.first_click_multimask is False


@pytest.mark.parametrize("name", ["model.txt", "model", "weights.safetensors"])
def test_an_output_that_is_not_a_checkpoint_file_is_refused(tmp_path, tiny_model, capsys, name):
    ckpt = save_checkpoint(tiny_model, tmp_path / "c.pth")
    assert main(["export", str(ckpt), str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        f"error: output must be a PyTorch checkpoint file ending in .pth or .pt, got {name}"
    )
    assert not (tmp_path / name).exists()
