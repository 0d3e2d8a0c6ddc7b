"""Default checkpoint resolution and ``SamMed3DPredictor.from_checkpoint``."""

from __future__ import annotations

import pytest

from sammed3d import paths, save_checkpoint
from sammed3d.inference import SamMed3DPredictor


def test_default_checkpoint_order(tmp_path, monkeypatch):
    bundled = tmp_path / "assets" / "sammed3d_default.pth"
    monkeypatch.setattr(paths, "BUNDLED_CHECKPOINT", bundled)
    monkeypatch.delenv(paths.ENV_CHECKPOINT, raising=False)
    assert paths.default_checkpoint() is None
    with pytest.raises(FileNotFoundError, match="SAMMED3D_CHECKPOINT"):
        paths.require_checkpoint()
    bundled.parent.mkdir()
    bundled.write_bytes(b"x")
    assert paths.default_checkpoint() == bundled
    env = tmp_path / "mine.pth"
    env.write_bytes(b"x")
    monkeypatch.setenv(paths.ENV_CHECKPOINT, str(env))
    assert paths.default_checkpoint() == env
    monkeypatch.setenv(paths.ENV_CHECKPOINT, str(tmp_path / "gone.pth"))
    with pytest.raises(FileNotFoundError, match="not a file"):
        paths.default_checkpoint()
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        paths.require_checkpoint(tmp_path / "other.pth")


def test_from_checkpoint_uses_the_environment(tmp_path, monkeypatch, tiny_model):
    ckpt = save_checkpoint(tiny_model, tmp_path / "tiny.pth")
    monkeypatch.setenv(paths.ENV_CHECKPOINT, str(ckpt))
    predictor = SamMed3DPredictor.from_checkpoint(extend=False)
    assert predictor.roi_size == 64 and predictor.extend is False


def test_home_is_lazy_and_overridable(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.ENV_HOME, str(tmp_path / "cache"))
    assert paths.sammed3d_home() == tmp_path / "cache"
    assert not (tmp_path / "cache").exists()
