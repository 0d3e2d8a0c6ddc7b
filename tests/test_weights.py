"""Published weights by name: download through huggingface_hub from a loopback Hub, verify, cache.

Every request goes to :class:`tests.fake_hub.FakeHub` on 127.0.0.1 (``HF_ENDPOINT``); the file
served is a small checkpoint made here (``sam_med3d_tiny`` + ``save_checkpoint``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from sammed3d import build_model, load_checkpoint, paths, save_checkpoint, weights
from sammed3d.weights import PublishedWeights, WeightsError
from tests.conftest import randomize_
from tests.fake_hub import guard_loopback, start_loopback_hub

REPO = "test-org/tiny-weights"
FILE = "tiny.pth"


@pytest.fixture(scope="module")
def tiny_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    model = randomize_(build_model("sam_med3d_tiny"), seed=3)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / FILE).read_bytes()


@pytest.fixture()
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A fresh loopback Hub, an empty HF cache and sammed3d home, online."""
    fake = start_loopback_hub(monkeypatch, tmp_path)
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch):
    """Refuse (and fail the test on) any connection to an address outside 127.0.0.0/8."""
    refused = guard_loopback(monkeypatch)
    yield
    assert refused == [], f"connections outside loopback were attempted: {refused}"


def _register(monkeypatch, body: bytes, **kw) -> PublishedWeights:
    row = dict(
        name="tiny",
        aliases=("tiny_alias",),
        filename=FILE,
        description="test weights",
        repo_id=REPO,
        size=len(body),
        size_text="2 MB",
        sha256=hashlib.sha256(body).hexdigest(),
    )
    row.update(kw)
    entry = PublishedWeights(**row)
    monkeypatch.setitem(weights.WEIGHTS, "tiny", entry)
    return entry


def _cache_files(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "hf" / "hub").rglob("*") if p.is_file())


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and "weights_only" not in msg
    return msg


def test_table_rows_are_consistent():
    turbo = weights.lookup("turbo")
    assert turbo is weights.lookup("sam_med3d_turbo") is weights.lookup("TURBO")
    assert turbo.repo_id == "blueyo0/SAM-Med3D" and turbo.filename == "sam_med3d_turbo.pth"
    assert turbo.licence == "Apache-2.0" and len(turbo.sha256) == 64
    for w in weights.WEIGHTS.values():
        assert w.sha256 is None or len(w.sha256) == 64
        assert w.repo_id or w.manual_url or w.bundled
    assert weights.lookup("default").bundled
    assert weights.lookup("nope") is None


def test_download_then_cache_hit(hub, monkeypatch, tmp_path, tiny_bytes):
    _register(monkeypatch, tiny_bytes)
    hub.host(REPO, FILE, tiny_bytes)
    path = weights.resolve("tiny")
    assert path.read_bytes() == tiny_bytes
    assert (tmp_path / "hf" / "hub") in path.parents  # the huggingface_hub cache, HF_HOME
    assert f"models--{REPO.replace('/', '--')}" in str(path)
    assert len(hub.requests("GET")) == 1
    n = len(hub.log)
    assert weights.resolve("tiny_alias") == path  # cache hit: no request at all
    assert len(hub.log) == n
    # the same strict loader, by name, from the API
    model = load_checkpoint("tiny")
    expected = torch.load(path, weights_only=True)["model_state_dict"]
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    assert len(hub.log) == n


def test_wrong_hash_refused_and_removed(hub, monkeypatch, tmp_path, tiny_bytes):
    _register(monkeypatch, tiny_bytes, sha256="0" * 64)
    hub.host(REPO, FILE, tiny_bytes)
    with pytest.raises(WeightsError) as err:
        weights.resolve("tiny")
    assert "SHA-256" in _one_line(err) and "0000000000000000" in str(err.value)
    assert not [p for p in _cache_files(tmp_path) if p.stat().st_size == len(tiny_bytes)]


def test_wrong_size_refused(hub, monkeypatch, tmp_path, tiny_bytes):
    _register(monkeypatch, tiny_bytes, size=len(tiny_bytes) + 1)
    hub.host(REPO, FILE, tiny_bytes)
    with pytest.raises(WeightsError) as err:
        weights.resolve("tiny")
    assert f"{len(tiny_bytes):,} bytes" in _one_line(err)
    assert not [p for p in _cache_files(tmp_path) if p.stat().st_size == len(tiny_bytes)]


def test_host_serving_another_file_is_refused(hub, monkeypatch, tiny_bytes):
    _register(monkeypatch, tiny_bytes)
    changed = bytearray(tiny_bytes)
    changed[len(changed) // 2] ^= 0xFF  # one tensor value differs; still a valid archive
    hub.host(REPO, FILE, bytes(changed))  # ETag = the new file's hash: an upstream change
    with pytest.raises(WeightsError, match="host now serves a different tiny.pth"):
        weights.resolve("tiny")


def test_html_body_refused(hub, monkeypatch, tmp_path, tiny_bytes):
    _register(monkeypatch, tiny_bytes, size=None, sha256=None)  # only the format check is left
    page = b"<!DOCTYPE html><html><head><title>Quota exceeded</title></head><body></body></html>"
    hub.host(REPO, FILE, page)
    with pytest.raises(WeightsError) as err:
        weights.resolve("tiny")
    assert "HTML page" in _one_line(err) and "Quota exceeded" in str(err.value)
    assert _cache_files(tmp_path) == [] or all(p.suffix != ".pth" for p in _cache_files(tmp_path))


def test_interrupted_download_is_resumed(hub, monkeypatch, tiny_bytes):
    import huggingface_hub.constants as hf_constants

    # huggingface_hub writes whole 10 MB chunks; smaller ones make a 2 MB file behave like a
    # 400 MB one (bytes on disk when the connection drops, so the retry asks for the rest)
    monkeypatch.setattr(hf_constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    _register(monkeypatch, tiny_bytes)
    hub.host(REPO, FILE, tiny_bytes, fault="drop_first_get")
    path = weights.resolve("tiny")
    assert path.read_bytes() == tiny_bytes
    gets = hub.requests("GET")
    assert len(gets) == 2
    resumed_at = int(gets[1][2].removeprefix("bytes=").rstrip("-"))  # Range: bytes=N-
    assert 0 < resumed_at <= len(tiny_bytes) // 2


def test_interrupted_download_is_never_used(hub, monkeypatch, tmp_path, tiny_bytes):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)  # see above
    _register(monkeypatch, tiny_bytes)
    hosted = hub.host(REPO, FILE, tiny_bytes, fault="drop_every_get")
    with pytest.raises(WeightsError) as err:
        weights.resolve("tiny")
    msg = _one_line(err)
    assert msg.startswith("could not download tiny (tiny.pth, 2 MB)")
    assert f"{hub.endpoint}/{REPO}/resolve/main/{FILE}" in msg and "SAMMED3D_HOME" in msg
    assert not any(p.name == FILE for p in _cache_files(tmp_path))  # no pointer to a part file
    assert not any(p.stat().st_size == len(tiny_bytes) for p in _cache_files(tmp_path))
    hosted.fault = ""
    assert weights.resolve("tiny").read_bytes() == tiny_bytes


def test_partial_file_of_a_killed_download_is_not_used(hub, monkeypatch, tmp_path, tiny_bytes):
    entry = _register(monkeypatch, tiny_bytes)
    hub.host(REPO, FILE, tiny_bytes)
    blobs = tmp_path / "hf" / "hub" / f"models--{REPO.replace('/', '--')}" / "blobs"
    blobs.mkdir(parents=True)
    # what a process killed mid-download leaves (old and new huggingface_hub names)
    (blobs / f"{entry.sha256}.incomplete").write_bytes(tiny_bytes[:1000])
    (blobs / f"{entry.sha256}.1a2b3c4d.incomplete").write_bytes(tiny_bytes[:1000])
    assert weights.status(entry).path is None
    path = weights.resolve("tiny")
    assert path.read_bytes() == tiny_bytes


def test_offline_without_cache(hub, monkeypatch, tiny_bytes):
    _register(monkeypatch, tiny_bytes)
    hub.host(REPO, FILE, tiny_bytes)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError) as err:
        weights.resolve("tiny")
    msg = _one_line(err)
    assert "HF_HUB_OFFLINE" in msg and "sammed3d weights download tiny" in msg
    assert f"{hub.endpoint}/{REPO}/resolve/main/{FILE}" in msg and "SAMMED3D_HOME" in msg
    assert hub.log == []


def test_offline_with_cache(hub, monkeypatch, tiny_bytes):
    _register(monkeypatch, tiny_bytes)
    hub.host(REPO, FILE, tiny_bytes)
    path = weights.resolve("tiny")
    n = len(hub.log)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert weights.resolve("tiny") == path
    assert paths.require_checkpoint("tiny") == path
    assert len(hub.log) == n


def test_damaged_cache_is_fetched_again_online_and_refused_offline(hub, monkeypatch, tiny_bytes):
    _register(monkeypatch, tiny_bytes)
    hub.host(REPO, FILE, tiny_bytes)
    path = weights.resolve("tiny")
    blob = path.resolve()
    blob.write_bytes(tiny_bytes[:5000])  # e.g. a disk error
    assert weights.resolve("tiny").read_bytes() == tiny_bytes
    assert len(hub.requests("GET")) == 2
    path.resolve().write_bytes(tiny_bytes[:5000])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="damaged and has been removed.*HF_HUB_OFFLINE"):
        weights.resolve("tiny")


def test_local_copy_is_used_and_checked_not_deleted(hub, monkeypatch, tmp_path, tiny_bytes):
    _register(monkeypatch, tiny_bytes)
    local = tmp_path / "home" / FILE
    local.parent.mkdir()
    local.write_bytes(tiny_bytes)
    assert weights.resolve("tiny") == local
    assert hub.log == []  # no network for a local copy
    assert (tmp_path / "home" / "verified.json").is_file()  # hashed once, remembered
    local.write_bytes(tiny_bytes[:-10] + b"0123456789")
    with pytest.raises(WeightsError, match="SHA-256"):
        weights.resolve("tiny")
    assert local.is_file()  # the user's file is refused, never removed


def test_missing_file_on_the_host(hub, monkeypatch, tiny_bytes):
    _register(monkeypatch, tiny_bytes)
    with pytest.raises(WeightsError) as err:
        weights.resolve("tiny")
    assert "HTTP 404" in _one_line(err)


def test_host_error_is_one_line(hub, monkeypatch, tiny_bytes):
    _register(monkeypatch, tiny_bytes)
    hub.host(REPO, FILE, tiny_bytes, fault="head_403")
    with pytest.raises(WeightsError) as err:
        weights.resolve("tiny")
    assert _one_line(err).startswith("could not download tiny")


def test_no_server_at_all_is_one_line(hub, monkeypatch, tiny_bytes):
    import socket
    import time

    _register(monkeypatch, tiny_bytes)
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(time, "sleep", lambda _s: None)  # skip huggingface_hub's back-off waits
    with pytest.raises(WeightsError) as err:
        weights.resolve("tiny")
    msg = _one_line(err)
    assert msg.startswith(f"could not download tiny (tiny.pth, 2 MB) from http://127.0.0.1:{port}")
    assert "Connection refused" in msg and f"/{REPO}/resolve/main/{FILE}" in msg


def test_not_on_the_hub_says_where_to_fetch(hub, monkeypatch):
    with pytest.raises(WeightsError) as err:
        paths.require_checkpoint("sam_med3d")
    msg = _one_line(err)
    assert "drive.google.com" in msg and "--allow-unsafe-pickle" in msg
    assert str(Path(paths.sammed3d_home()) / "sam_med3d.pth") in msg
    assert hub.log == []


def test_names_resolve_everywhere_a_checkpoint_is_accepted(hub, monkeypatch, tmp_path, tiny_bytes):
    from sammed3d.cli import main
    from sammed3d.inference import SamMed3DPredictor

    _register(monkeypatch, tiny_bytes)
    hub.host(REPO, FILE, tiny_bytes)
    assert SamMed3DPredictor.from_checkpoint("tiny", extend=False).roi_size == 64
    monkeypatch.setenv(paths.ENV_CHECKPOINT, "tiny")
    assert paths.default_checkpoint() == weights.resolve("tiny")
    assert main(["info", "--checkpoint", "tiny"]) == 0
    out = tmp_path / "exported.pth"
    assert main(["export", "tiny", str(out)]) == 0 and out.is_file()
    assert len(hub.requests("GET")) == 1  # one download, then the cache


def test_train_init_by_name(hub, monkeypatch, tmp_path, tiny_bytes):
    from sammed3d.build import CheckpointError
    from sammed3d.training import load_config, train
    from sammed3d.training.data import SyntheticDataset

    _register(monkeypatch, tiny_bytes)
    hub.host(REPO, FILE, tiny_bytes)
    overrides = [f"run.output_dir={tmp_path / 'run'}", "model.init_checkpoint=tiny"]
    cfg = load_config("tiny_cpu", [*overrides, "model.name=sam_med3d_small"])
    # fetched by name, then refused by the same strict rules as any init file
    with pytest.raises(CheckpointError, match=r"tiny.pth does not fit the model"):
        train(cfg, dataset=SyntheticDataset(2, 64, seed=1), show_progress=False)
    assert len(hub.requests("GET")) == 1


def test_train_cli_init_by_name(hub, monkeypatch, tmp_path, tiny_bytes, capsys):
    """`sammed3d train --init NAME`: the CLI's before-any-work check accepts a published name
    (it fetches it), and still refuses one that is neither a file nor a name."""
    from sammed3d.cli import main

    _register(monkeypatch, tiny_bytes)
    hub.host(REPO, FILE, tiny_bytes)
    monkeypatch.chdir(tmp_path)
    base = ["train", "--config", "tiny_cpu", "-o", "run", "data.roots=[nowhere]", "--no-progress"]
    assert main([*base, "--init", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "error: dataset folder not found: nowhere" in err  # past the init check
    assert len(hub.requests("GET")) == 1
    assert main([*base, "--init", "tinyy"]) == 2
    assert "error: init checkpoint not found: tinyy (not a published name either" in (
        capsys.readouterr().err
    )


def test_file_names_and_typos_get_a_hint(tmp_path):
    with pytest.raises(FileNotFoundError, match="--checkpoint turbo"):
        paths.require_checkpoint(tmp_path / "sam_med3d_turbo.pth")
    with pytest.raises(FileNotFoundError, match="not a published name either"):
        paths.require_checkpoint("trubo")


def test_existing_file_wins_over_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("turbo").write_bytes(b"x")
    assert paths.require_checkpoint("turbo") == Path("turbo")


def test_bundled_default_by_name():
    path = paths.require_checkpoint("default")
    assert path == paths.BUNDLED_CHECKPOINT == weights.resolve("demo")


def test_environment_is_read_at_call_time(monkeypatch, tmp_path):
    for var in (
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_HOME",
        "XDG_CACHE_HOME",
        "TRANSFORMERS_OFFLINE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert weights.hub_cache_dir() == tmp_path / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights.hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert weights.hub_cache_dir() == tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert weights.hub_cache_dir() == tmp_path / "cache"
    monkeypatch.setenv("HF_ENDPOINT", "https://mirror.example/")
    assert weights.lookup("turbo").url == (
        "https://mirror.example/blueyo0/SAM-Med3D/resolve/main/sam_med3d_turbo.pth"
    )
    for value, offline in (("1", True), ("ON", True), ("0", False), ("", False)):
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
        assert weights.hub_offline() is offline


def test_unresolvable_hub_fails_at_once_in_one_line(hub, monkeypatch, tiny_bytes):
    """No network (the host name does not resolve): one line naming the host and the manual
    route, without huggingface_hub's ~30 s of retries and without a request."""
    import socket

    _register(monkeypatch, tiny_bytes)
    hub.host(REPO, FILE, tiny_bytes)

    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(weights.socket, "getaddrinfo", no_dns)
    with pytest.raises(WeightsError) as err:
        weights.resolve("tiny")
    msg = _one_line(err)
    assert "cannot reach" in msg and "name or service not known" in msg
    assert "SAMMED3D_HOME" in msg
    assert hub.log == []


def test_behind_a_proxy_the_name_is_not_resolved_here(monkeypatch):
    import socket

    entry = weights.lookup("turbo")
    calls = []

    def no_dns(*args, **kwargs):
        calls.append(args)
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(weights.socket, "getaddrinfo", no_dns)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    weights._check_reachable(entry)  # no error: the proxy resolves names
    assert calls == []
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.delenv("https_proxy", raising=False)
    with pytest.raises(WeightsError, match="cannot reach https://huggingface.co"):
        weights._check_reachable(entry)


def test_every_named_weights_file_names_a_registered_architecture():
    from sammed3d import MODEL_REGISTRY
    from sammed3d.weights import WEIGHTS

    assert {e.name: e.architecture for e in WEIGHTS.values()} == {
        "turbo": "sam_med3d_turbo",
        "sam_med3d": "sam_med3d",
        "default": "sam_med3d_demo",
    }
    assert all(e.architecture in MODEL_REGISTRY for e in WEIGHTS.values())
    from sammed3d import load_checkpoint
    from sammed3d.build import model_config_of, registered_names

    bundled = registered_names(model_config_of(load_checkpoint("default")))
    assert bundled[0] == WEIGHTS["default"].architecture
