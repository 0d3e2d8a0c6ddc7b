"""``sammed3d info`` and the CLI's error handling."""

from __future__ import annotations

import json

from sammed3d.cli import main


def test_info_json_with_forward(capsys):
    assert main(["info", "--json", "--forward", "sam_med3d_tiny"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["forward"]["embedding"] == [1, 48, 4, 4, 4]
    assert out["forward"]["finite"] is True
    assert "sam_med3d_turbo" in out["registered_models"]


def test_info_describes_checkpoint(capsys, small_checkpoint):
    assert main(["info", "--json", "--checkpoint", str(small_checkpoint)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["checkpoint"]["config"]["encoder_embed_dim"] == 96


def test_info_text_lists_a_checkpoint_config_one_entry_per_line(capsys, small_checkpoint):
    assert main(["info", "--checkpoint", str(small_checkpoint)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"{'checkpoint':>18}:" in lines
    assert " " * 20 + "config:" in lines
    assert " " * 22 + "encoder_embed_dim: 96" in lines


def test_missing_checkpoint_is_one_line_error(capsys, tmp_path):
    assert main(["info", "--checkpoint", str(tmp_path / "none.pth")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: checkpoint not found") and "\n" not in err


def test_corrupt_checkpoint_is_one_line_error(capsys, tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x00" * 100)
    assert main(["info", "--checkpoint", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a readable PyTorch checkpoint" in err and "Traceback" not in err


def test_unknown_model_is_one_line_error(capsys):
    assert main(["info", "--forward", "vit_z"]) == 2
    assert "unknown model 'vit_z'" in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage: sammed3d" in capsys.readouterr().out


def test_info_without_flags_reports_installed_versions(capsys):
    assert main(["info", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"sammed3d", "python", "torch", "numpy"}
    assert out["torch"].split("+")[0].count(".") >= 1


def test_info_devices_adds_torch_facts(capsys):
    assert main(["info", "--json", "--devices"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert isinstance(out["cuda_available"], bool) and out["cpu_threads"] >= 1
    assert "sam_med3d_turbo" in out["registered_models"]


def test_info_names_the_registered_architecture_of_the_bundled_model(capsys):
    from sammed3d.paths import BUNDLED_CHECKPOINT

    for target in ("default", str(BUNDLED_CHECKPOINT)):
        assert main(["info", "--checkpoint", target]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert " " * 20 + "architecture: sam_med3d_demo" in lines


def test_info_says_when_an_architecture_is_custom(capsys, tmp_path):
    import dataclasses

    from sammed3d import build_model, save_checkpoint
    from sammed3d.build import MODEL_REGISTRY

    assert main(["info", "--json", "--checkpoint", "default"]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoint"]["architecture"] == "sam_med3d_demo"
    custom = dataclasses.replace(MODEL_REGISTRY["sam_med3d_tiny"], decoder_mlp_dim=64)
    path = save_checkpoint(build_model(custom), tmp_path / "custom.pth")
    assert main(["info", "--json", "--checkpoint", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoint"]["architecture"].startswith("custom")
