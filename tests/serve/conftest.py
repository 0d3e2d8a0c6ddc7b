"""Fixtures for the server tests (helpers live in ``tests/serve/helpers.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.serve.helpers import tiny_model


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``sam_med3d_tiny`` (default initialisation, seeded) saved as a checkpoint."""
    from sammed3d.build import save_checkpoint

    return save_checkpoint(tiny_model(), tmp_path_factory.mktemp("ckpt") / "tiny.pth")
