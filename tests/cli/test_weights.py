"""``sammed3d weights`` and published names on the command line (loopback Hub only)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from sammed3d import build_model, save_checkpoint, weights
from sammed3d.cli import main
from sammed3d.weights import PublishedWeights
from tests.conftest import randomize_
from tests.fake_hub import guard_loopback, start_loopback_hub

REPO = "test-org/tiny-weights"
FILE = "tiny.pth"


@pytest.fixture(scope="module")
def tiny_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    model = randomize_(build_model("sam_med3d_tiny"), seed=4)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / FILE).read_bytes()


@pytest.fixture()
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_bytes: bytes):
    """A loopback Hub serving ``tiny.pth``, registered in the weights table as ``tiny``."""
    fake = start_loopback_hub(monkeypatch, tmp_path)
    fake.host(REPO, FILE, tiny_bytes)
    entry = PublishedWeights(
        name="tiny",
        filename=FILE,
        description="test weights",
        repo_id=REPO,
        size=len(tiny_bytes),
        sha256=hashlib.sha256(tiny_bytes).hexdigest(),
    )
    monkeypatch.setitem(weights.WEIGHTS, "tiny", entry)
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch):
    refused = guard_loopback(monkeypatch)
    yield
    assert refused == [], f"connections outside loopback were attempted: {refused}"


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err


def test_list_shows_names_and_what_is_here(hub, capsys, tmp_path):
    assert main(["weights"]) == 0
    out = capsys.readouterr().out
    for word in (
        "turbo",
        "sam_med3d_turbo.pth",
        "402 MB",
        "899a46d04d3b",
        "Apache-2.0",
        "drive.google.com",
        "bundled:",
        str(tmp_path / "hf" / "hub"),
    ):
        assert word in out, word
    assert main(["weights", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["weights"]}
    assert rows["tiny"]["available"] is None and rows["default"]["available"] == "bundled"
    assert main(["weights", "download", "tiny"]) == 0
    capsys.readouterr()
    assert main(["weights", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["weights"]}
    assert rows["tiny"]["available"] == "cache"
    assert Path(rows["tiny"]["path"]).read_bytes() == hub.files[(REPO, FILE)].body


def test_download_ahead_then_offline_use(hub, capsys, monkeypatch, tiny_bytes):
    assert main(["weights", "download", "tiny", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("tiny: ") and f"({len(tiny_bytes):,} bytes)" in out
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = len(hub.log)
    assert main(["info", "--json", "--checkpoint", "tiny"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (
        info["checkpoint"]["path"].endswith(FILE)
        and "models--test-org" in info["checkpoint"]["path"]
    )
    assert len(hub.log) == n


def test_progress_bar_and_no_progress(hub, capsys, monkeypatch):
    monkeypatch.setenv("TQDM_POSITION", "-1")  # huggingface_hub draws bars only on a TTY otherwise
    assert main(["weights", "download", "tiny", "--no-progress"]) == 0
    assert "100%" not in capsys.readouterr().err
    assert main(["weights", "download", "tiny", "--force"]) == 0
    err = capsys.readouterr().err
    assert "100%" in err and FILE in err


def test_offline_without_cache_is_one_line(hub, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["info", "--checkpoint", "tiny"]) == 2
    err = _err(capsys)
    assert err.startswith("error: tiny (tiny.pth) is not in the cache") and "\n" not in err
    assert "HF_HUB_OFFLINE" in err and f"/{REPO}/resolve/main/{FILE}" in err
    assert hub.log == []


def test_download_errors_exit_2(hub, capsys):
    assert main(["weights", "download", "sam_med3d"]) == 2
    err = _err(capsys)
    assert "not on the Hugging Face Hub" in err and "drive.google.com" in err
    assert main(["weights", "download", "nope"]) == 2
    assert "unknown weights name 'nope'" in _err(capsys)
    assert main(["weights", "download"]) == 2
    assert "needs at least one name" in _err(capsys)


def test_verify_a_local_file(hub, capsys, tmp_path, tiny_bytes):
    mine = tmp_path / FILE
    mine.write_bytes(tiny_bytes)
    assert main(["weights", "verify", str(mine), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["sha256"] == hashlib.sha256(tiny_bytes).hexdigest()
    assert rep["matches"] == "tiny: size and SHA-256 as recorded"  # matched by its file name
    assert rep["loads"].startswith("yes, strictly: 421,498 parameters")
    other = save_checkpoint(build_model("sam_med3d_tiny"), tmp_path / "other.pth")
    assert main(["weights", "verify", str(other), "--name", "tiny"]) == 2
    assert "different file" in _err(capsys)  # by size or by SHA-256
    assert main(["weights", "verify", str(other)]) == 0
    assert "no published file of this name or hash" in capsys.readouterr().out


def test_verify_refuses_a_saved_html_page(hub, capsys, tmp_path):
    page = tmp_path / "sam_med3d_turbo.pth"
    page.write_bytes(b"<html><head><title>Sign in</title></head><body></body></html>")
    assert main(["weights", "verify", str(page)]) == 2
    err = _err(capsys)
    assert "is an HTML page" in err and "\n" not in err and "weights_only" not in err


def test_verify_by_name(hub, capsys):
    assert main(["weights", "verify", "tiny"]) == 2
    assert "`sammed3d weights download tiny` fetches it" in _err(capsys)
    assert main(["weights", "download", "tiny"]) == 0
    capsys.readouterr()
    assert main(["weights", "verify", "tiny", "--no-load"]) == 0
    out = capsys.readouterr().out
    assert "size and SHA-256 as recorded" in out and "loads" not in out


def test_demo_offline_without_weights_leaves_nothing(hub, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "demo_out"
    assert main(["demo", "--checkpoint", "turbo", "-o", str(out)]) == 2
    err = _err(capsys)
    assert "sam_med3d_turbo.pth" in err and "HF_HUB_OFFLINE" in err
    assert not out.exists()


def test_verify_recognises_the_bundled_model(capsys, tmp_path):
    from sammed3d.paths import BUNDLED_CHECKPOINT

    copy = tmp_path / "renamed.pth"  # recognised by its hash, not its name
    copy.write_bytes(BUNDLED_CHECKPOINT.read_bytes())
    for target in (str(BUNDLED_CHECKPOINT), str(copy), "default"):
        assert main(["weights", "verify", target, "--no-load", "--json"]) == 0
        rep = json.loads(capsys.readouterr().out)
        assert rep["sha256"] == weights.sha256_of(BUNDLED_CHECKPOINT)  # from the asset itself
        assert rep["matches"].startswith("default: the model bundled with sammed3d")
    # --name default compares with the asset: another file is refused in one line
    other = save_checkpoint(build_model("sam_med3d_tiny"), tmp_path / "other.pth")
    assert main(["weights", "verify", str(other), "--name", "default", "--no-load"]) == 2
    err = _err(capsys)
    assert "of the bundled sammed3d_default.pth" in err and "different file" in err
