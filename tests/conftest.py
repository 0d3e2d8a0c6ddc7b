"""Shared fixtures: small models, a published-format checkpoint, and ``../shared/fixtures``.

The suite passes on a plain clone: the tests that read ``../shared/fixtures`` skip with a
reason when that folder is absent; parity with the published network is checked against the
``medim`` package instead (tests/modeling/test_medim_parity.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"


def pytest_configure(config: pytest.Config) -> None:
    torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:  # tests that read ../shared get the "shared" marker (tests/test_clone.py)
        if "fixtures_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared)
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """``../shared/fixtures`` (used in place, never copied); skips the test when absent."""
    if not (SHARED_FIXTURES / "sammed3d_small.pth").exists():
        pytest.skip(
            f"no ../shared/fixtures beside the repository ({SHARED_FIXTURES}); "
            "parity is covered by tests/modeling/test_medim_parity.py"
        )
    return SHARED_FIXTURES


def randomize_(model: torch.nn.Module, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """Give every parameter random values (zero-init tables would hide quirks)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``sam_med3d_small`` checkpoint with random weights in the published format.

    The published format is a dict whose ``model_state_dict`` holds the tensors (no
    ``module.`` prefix, no config); it loads with ``torch.load(weights_only=True)``.
    """
    from sammed3d import build_model

    path = tmp_path_factory.mktemp("checkpoints") / "sammed3d_small.pth"
    model = randomize_(build_model("sam_med3d_small"), seed=11)
    torch.save({"model_state_dict": model.state_dict()}, path)
    return path


@pytest.fixture()
def tiny_model() -> torch.nn.Module:
    from sammed3d import build_model

    return randomize_(build_model("sam_med3d_tiny"))


def run_fresh_python(code: str) -> Any:
    """Run ``code`` in a fresh interpreter; it prints one JSON value as its last line."""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        check=True,
        timeout=120,
        encoding="utf-8",
        errors="replace",
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])
