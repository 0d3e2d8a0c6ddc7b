"""``sammed3d serve``: lazy imports, start-up errors, the API key, the printed URLs."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch

from sammed3d import save_checkpoint
from sammed3d.cli import main
from tests.serve.helpers import cli_server


@pytest.fixture()
def ckpt(tmp_path: Path, tiny_model: torch.nn.Module) -> Path:
    return save_checkpoint(tiny_model, tmp_path / "tiny.pth")


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_help_does_not_import_the_server_stack() -> None:
    code = (
        "import sys\n"
        "from sammed3d.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "try:\n    main(['serve', '--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('fastapi', 'uvicorn', 'starlette', 'blosc2') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout, out.stdout
    assert "serve SAM-Med3D" in out.stdout  # listed in --help
    assert "--api-key" in out.stdout and "--orientation" in out.stdout


def test_start_up_errors(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", str(tmp_path / "missing.nii.gz"), "--checkpoint", str(ckpt)]) == 2
    assert "volume not found" in _err(capsys)
    assert main(["serve", "--port", "70000", "--checkpoint", str(ckpt)]) == 2
    assert "--port" in _err(capsys)
    assert main(["serve", "--checkpoint", str(tmp_path / "none.pth")]) == 2
    assert "checkpoint not found" in _err(capsys)
    assert main(["serve", "--max-rois", "0", "--checkpoint", str(ckpt)]) == 2
    assert "--max-rois" in _err(capsys)
    assert main(["serve", "--zoom-spacing", "nan", "--checkpoint", str(ckpt)]) == 2
    assert "--zoom-spacing" in _err(capsys)
    assert main(["serve", "--refine-boundary", "-1", "--checkpoint", str(ckpt)]) == 2
    assert "--refine-boundary must be 0 (off)" in _err(capsys)
    assert main(["serve", "--contrast-guard", "11", "--checkpoint", str(ckpt)]) == 2
    assert "--contrast-guard must be 0 (off)" in _err(capsys)
    # the one device resolver: an unusable GPU index is a one-line error, not a torch traceback
    assert main(["serve", "--device", "cuda:99", "--checkpoint", str(ckpt)]) == 2
    assert "--device" in _err(capsys)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port), "--checkpoint", str(ckpt)]) == 2
        assert "cannot listen on 127.0.0.1" in _err(capsys)


def test_api_key(ckpt: Path) -> None:
    with cli_server("--checkpoint", str(ckpt), "--api-key", "k3y") as (url, _):
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert httpx.post(f"{url}/claim").status_code == 401
        ok = httpx.post(f"{url}/claim", headers={"Authorization": "Bearer k3y"})
        assert ok.status_code == 200 and ok.json()["lease_token"]
        page = httpx.get(f"{url}/")  # the page itself loads; its API calls need the key
        assert page.status_code == 200
