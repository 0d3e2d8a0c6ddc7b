"""Findings of a new-user trial of ``sammed3d serve`` and its web page, one test each: the
decoded-size limit on every image the server opens, a modality per image, error messages
naming the user's file, clicks given in millimetres, "other extent" with one mask, the
printed URL, sessions not reaped during a long upload (and saying why when they are), and
start-up volumes checked before the server starts."""

from __future__ import annotations

import gzip
import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from sammed3d.cli import main
from sammed3d.inference import SamMed3DPredictor
from sammed3d.io import VolumeError
from sammed3d.serve import images as serve_images
from sammed3d.serve import web as serve_web
from sammed3d.serve.app import create_app
from sammed3d.serve.config import ServeConfig
from sammed3d.serve.images import (
    ImageTooLarge,
    check_startup_volume,
    read_header,
)
from sammed3d.serve.leases import LeaseGone, LeaseRegistry
from tests.serve.helpers import BlobModel, ExtentBlobModel, running, web_client
from tests.serve.test_web import AFFINE, SHAPE, mm_of, web_image
from tests.volumes import not_volume_bytes

LIMIT = 16 * 2**20
BIG = (300, 300, 200)  # uint8: 17.2 MiB decoded, a few kB as .nii.gz


def one_line(resp: httpx.Response, status: int, *texts: str) -> str:
    assert resp.status_code == status, resp.text
    detail = resp.json()["detail"]
    assert "\n" not in detail
    for text in texts:
        assert text in detail, detail
    return detail


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trial")
    out = {"good": root / "flipped.nii.gz", "big": root / "big.nii.gz"}
    nib.save(nib.Nifti1Image(web_image(), AFFINE), out["good"])
    nib.save(nib.Nifti1Image(np.zeros(BIG, np.uint8), np.eye(4)), out["big"])
    return out


@pytest.fixture(scope="module")
def url(files: dict[str, Path]) -> Iterator[str]:
    config = ServeConfig(volumes=(files["good"], files["big"]), max_upload_bytes=LIMIT)
    with running(create_app(lambda: SamMed3DPredictor(BlobModel(32)), config)) as base:
        yield base


@pytest.fixture()
def client(url: str) -> Iterator[httpx.Client]:
    with web_client(url) as c:
        yield c


def _upload(c: httpx.Client, name: str, data: bytes, **params: str) -> httpx.Response:
    return c.post("/api/web/upload", params={"filename": name, **params}, content=data)


# 1. the decoded-size limit --------------------------------------------------------------


def test_upload_that_decodes_past_the_limit_is_refused_from_its_header(
    client: httpx.Client, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = files["big"].read_bytes()
    assert len(data) < 2**20  # small on the wire
    read: list[object] = []
    monkeypatch.setattr(serve_web, "load_image", lambda *a, **k: read.append(a))
    detail = one_line(
        _upload(client, "huge scan.nii.gz", data),
        413,
        "huge scan.nii.gz",
        "300 x 300 x 200 uint8",
        "decodes to 17.2 MiB",
        "at most 16.0 MiB",
        "--max-upload-mb",
    )
    assert "sammed3d-upload" not in detail and "/tmp" not in detail
    assert read == []  # refused before the voxels were read
    one_line(client.post("/api/web/click", json={"mm": [0, 0, 0]}), 400, "no volume is open")


def test_every_format_and_route_checks_the_decoded_size(
    client: httpx.Client, tmp_path: Path
) -> None:
    image = sitk.Image(list(BIG), sitk.sitkUInt8)
    for suffix in (".nrrd", ".mha"):
        path = tmp_path / f"big{suffix}"
        sitk.WriteImage(image, str(path), useCompression=True)
        assert path.stat().st_size < LIMIT
        one_line(_upload(client, f"big{suffix}", path.read_bytes()), 413, "decodes to 17.2 MiB")
    # a start-up volume (the server's own file) is held to the same limit
    one_line(client.post("/api/web/open", json={"index": 1}), 413, "big.nii.gz", "17.2 MiB")
    # scaled NIfTI voxels decode to float32: 4 bytes each, whatever the stored type
    raw = bytearray(nib.Nifti1Image(np.zeros((256, 256, 100), np.int16), np.eye(4)).to_bytes())
    struct.pack_into("<f", raw, 112, 2.0)  # scl_slope (nibabel's writer would reset it)
    path = tmp_path / "scaled.nii.gz"
    path.write_bytes(gzip.compress(bytes(raw)))
    header = read_header(path)
    assert header is not None and header.dtype == np.float32 and header.nbytes == 256 * 256 * 400
    one_line(_upload(client, "scaled.nii.gz", path.read_bytes()), 413, "float32", "25.0 MiB")


def test_unreadable_header_still_checked_before_the_session_gets_the_image(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serve_images, "read_header", lambda path: None)
    big = nib.Nifti1Image((np.arange(np.prod(BIG)) % 251).reshape(BIG).astype(np.uint8), None)
    data = gzip.compress(big.to_bytes(), compresslevel=1)
    one_line(_upload(client, "big.nii.gz", data), 413, "17.2 MiB")
    one_line(client.post("/api/web/click", json={"mm": [0, 0, 0]}), 400, "no volume is open")


# 2. a modality per image --------------------------------------------------------------


def test_modality_choice_on_upload_and_open(client: httpx.Client, files: dict[str, Path]) -> None:
    config = client.get("/api/web/config").json()
    assert config["modalities"] == ["CT", "MR", "PET", "SPECT", "US", "XR"]
    assert config["modality"] is None
    data = files["good"].read_bytes()
    info = _upload(client, "a.nii.gz", data).json()
    assert info["modality"] is None and info["modality_source"] is None  # NIfTI has none
    info = _upload(client, "a.nii.gz", data, modality="CT").json()
    assert info["modality"] == "CT" and info["modality_source"] == "chosen"
    info = _upload(client, "a.nii.gz", data, modality="mri").json()
    assert info["modality"] == "MR"
    info = _upload(client, "a.nii.gz", data, modality="").json()
    assert info["modality"] is None
    one_line(
        _upload(client, "a.nii.gz", data, modality="CTT"),
        400,
        "CT, MR, PET, SPECT, US, XR",
        "'CTT'",
    )
    info = client.post("/api/web/open", json={"index": 0, "modality": "PET"}).json()
    assert info["modality"] == "PET" and info["modality_source"] == "chosen"
    info = client.post("/api/web/open", json={"index": 0, "modality": None}).json()
    assert info["modality"] is None
    one_line(client.post("/api/web/open", json={"index": 0, "modality": 3}), 400, "CT, MR")


def test_server_modality_is_the_default(files: dict[str, Path]) -> None:
    config = ServeConfig(volumes=(files["good"],), modality="CT")
    app = create_app(lambda: SamMed3DPredictor(BlobModel(32)), config)
    with running(app) as base, httpx.Client(base_url=base, timeout=30) as c:
        c.headers["X-Lease-Token"] = c.post("/api/web/claim").json()["lease_token"]
        assert c.get("/api/web/config").json()["modality"] == "CT"
        info = c.post("/api/web/open", json={"index": 0}).json()
        assert info["modality"] == "CT" and info["modality_source"] == "server"
        info = c.post("/api/web/open", json={"index": 0, "modality": "MR"}).json()
        assert info["modality"] == "MR" and info["modality_source"] == "chosen"


# 3. messages name the user's file -------------------------------------------------------


def _nifti_gz(array: np.ndarray) -> bytes:
    return gzip.compress(nib.Nifti1Image(array, np.eye(4)).to_bytes())


def _bad_uploads() -> list[tuple[str, bytes, str]]:
    rng = np.random.default_rng(0)
    good = _nifti_gz(rng.uniform(0, 100, (20, 20, 20)).astype(np.float32))
    nan = rng.uniform(0, 100, (20, 20, 20)).astype(np.float32)
    nan[3, 3, 3] = np.nan
    labels = rng.integers(0, 3, (20, 20, 20)).astype(np.uint8)
    return [
        ("2-D", _nifti_gz(np.ones((96, 96), np.float32)), "3-D"),
        ("not gzip", b"not a nifti at all", "cannot read"),
        ("uncompressed", gzip.decompress(good), "rename it to end in .nii"),
        ("PNG", not_volume_bytes("png"), "it is a PNG image, not gzip-compressed NIfTI: sammed3d"),
        ("truncated", good[: len(good) // 2], "cannot read"),
        ("NaN", _nifti_gz(nan), "NaN"),
        ("label map", _nifti_gz(labels), "label"),
        ("float mask", _nifti_gz(labels * np.float32(0.4995)), "only 3 distinct values: 0, 0.4995"),
        ("constant", _nifti_gz(np.full((20, 20, 20), 7, np.float32)), "constant"),
    ]


@pytest.mark.parametrize(
    ("case", "data", "text"), _bad_uploads(), ids=[case for case, _, _ in _bad_uploads()]
)
def test_upload_errors_name_the_users_file(
    client: httpx.Client, case: str, data: bytes, text: str
) -> None:
    name = "My Scan (1).nii.gz"
    detail = one_line(_upload(client, name, data), 400, name, text)
    assert "sammed3d-upload" not in detail and "/tmp" not in detail, detail
    assert "My_Scan" not in detail  # the client's name, not the server copy's


# 4. clicks in millimetres ---------------------------------------------------------------


def test_click_errors_speak_millimetres(client: httpx.Client) -> None:
    client.post("/api/web/open", json={"index": 0})
    one_line(
        client.post("/api/web/click", json={"mm": ["a", "b", "c"]}),
        400,
        "3 finite numbers",
        "millimetres",
        "['a', 'b', 'c']",
    )
    for mm in (
        "[1, 2]",
        '"1,2,3"',
        "[1, 2, null]",
        "[true, 0, 0]",
        "[1e400, 0, 0]",
        "[1" + "0" * 400 + ", 0, 0]",  # an integer beyond float range
    ):
        body = f'{{"mm": {mm}}}'
        one_line(client.post("/api/web/click", content=body), 400, "3 finite numbers")
    one_line(client.post("/api/web/click", json={}), 400, "missing required field: mm")
    # x runs -1.2 mm per i from 40 mm: voxel faces at i = -0.5 and 39.5 -> x 40.6 .. -7.4
    one_line(
        client.post("/api/web/click", json={"mm": [1000, 0, 0]}),
        400,
        "click at (1000.0, 0.0, 0.0) mm (RAS+) is outside the image",
        "voxel (-800, 20, -7)",
        "x -7.4 to 40.6, y -20.5 to 15.5, z 9.2 to 54.2 mm",
    )
    meta = json.loads(
        client.post("/api/web/click", json={"mm": mm_of((9, 17, 14))}).headers["X-Meta"]
    )
    assert meta["voxel"] == [9, 17, 14]  # a good click still lands


# 5/6. other extents ---------------------------------------------------------------------


class OneExtentModel(ExtentBlobModel):
    """Offers extents, but its three masks of a first click are the same one."""

    def decode(
        self, image_embeddings, point_coords, point_labels, mask_input, multimask_output=False
    ):  # noqa: ANN001, ANN201
        low, iou = BlobModel.decode(self, image_embeddings, point_coords, point_labels, mask_input)
        if not multimask_output:
            return low, iou
        return low.repeat(1, 3, 1, 1, 1), torch.tensor([[0.9, 0.3, 0.5]])


def test_other_extent_is_off_with_one_mask(files: dict[str, Path]) -> None:
    config = ServeConfig(volumes=(files["good"],))
    app = create_app(lambda: SamMed3DPredictor(OneExtentModel(32)), config)
    with running(app) as base, httpx.Client(base_url=base, timeout=30) as c:
        c.headers["X-Lease-Token"] = c.post("/api/web/claim").json()["lease_token"]
        info = c.post("/api/web/open", json={"index": 0}).json()
        assert info["can_change_extent"] is False and "first click" in info["extent_note"]
        meta = json.loads(
            c.post("/api/web/click", json={"mm": mm_of((9, 17, 14))}).headers["X-Meta"]
        )
        assert meta["info"]["can_change_extent"] is False
        assert "only one mask" in meta["info"]["extent_note"]
        one_line(c.post("/api/web/extent"), 400, "only one mask")


def test_extent_notes(client: httpx.Client, files: dict[str, Path]) -> None:
    info = client.post("/api/web/open", json={"index": 0}).json()
    assert info["can_change_extent"] is False and "one mask per click" in info["extent_note"]
    config = ServeConfig(volumes=(files["good"],))
    app = create_app(lambda: SamMed3DPredictor(ExtentBlobModel(32)), config)
    with running(app) as base, httpx.Client(base_url=base, timeout=30) as c:
        c.headers["X-Lease-Token"] = c.post("/api/web/claim").json()["lease_token"]
        c.post("/api/web/open", json={"index": 0})
        meta = json.loads(
            c.post("/api/web/click", json={"mm": mm_of((9, 17, 14))}).headers["X-Meta"]
        )
        assert meta["info"]["can_change_extent"] is True and meta["info"]["extent_note"] is None
        meta = json.loads(
            c.post("/api/web/click", json={"mm": mm_of((30, 15, 15))}).headers["X-Meta"]
        )
        assert meta["info"]["can_change_extent"] is False
        assert "has 2 clicks" in meta["info"]["extent_note"]


# 7. the printed URL ---------------------------------------------------------------------


def test_the_printed_url_is_one_a_browser_opens() -> None:
    from sammed3d.cli.serve import browser_url

    assert browser_url("0.0.0.0", 36655) == ("http://localhost:36655", True)
    assert browser_url("::", 1527) == ("http://localhost:1527", True)
    assert browser_url("127.0.0.1", 1527) == ("http://127.0.0.1:1527", False)
    assert browser_url("::1", 1527) == ("http://[::1]:1527", False)
    assert browser_url("10.0.0.5", 80) == ("http://10.0.0.5:80", False)


# 8. sessions during long uploads, and why one ended ---------------------------------------


def test_busy_leases_are_not_reaped_and_gone_ones_say_why() -> None:
    reg: LeaseRegistry[dict] = LeaseRegistry(
        lambda kind: {}, max_sessions=2, idle_timeout=100.0, liveness_timeout=10.0
    )
    lease = reg.claim("web")
    with lease.working():
        assert reg.sweep(time.monotonic() + 1000) == []  # an upload still arriving
    assert reg.sweep(time.monotonic() + 5) == []  # its clocks restarted when it ended
    assert reg.sweep(time.monotonic() + 11) == [lease.token]
    with pytest.raises(LeaseGone, match=r"lease expired: no request from the client for 1\d s"):
        reg.get(lease.token)
    other = reg.claim("web")
    reg.release(other.token)
    with pytest.raises(LeaseGone, match="lease released") as caught:
        reg.get(other.token)
    assert caught.value.gone is not None and caught.value.gone.why == "released"


def test_a_slow_upload_keeps_its_session_and_a_reaped_one_says_why(
    files: dict[str, Path],
) -> None:
    config = ServeConfig(liveness_timeout=1.0, sweep_interval=0.1)
    data = files["good"].read_bytes()

    def slowly() -> Iterator[bytes]:  # 2.5 s, no other request meanwhile
        step = len(data) // 5 + 1
        for n in range(0, len(data), step):
            time.sleep(0.5)
            yield data[n : n + step]

    app = create_app(lambda: SamMed3DPredictor(BlobModel(32)), config)
    with running(app) as base, httpx.Client(base_url=base, timeout=30) as c:
        c.headers["X-Lease-Token"] = c.post("/api/web/claim").json()["lease_token"]
        resp = c.post("/api/web/upload", params={"filename": "slow.nii.gz"}, content=slowly())
        assert resp.status_code == 200, resp.text
        assert c.post("/api/web/heartbeat").status_code == 200
        time.sleep(2.5)  # silence: reaped
        detail = one_line(
            c.post("/api/web/click", json={"mm": mm_of((9, 17, 14))}),
            410,
            "this session expired: no request from the page for",
            "--liveness-timeout",
            "reload the page",
        )
        assert "POST /claim" not in detail
        c.headers["X-Lease-Token"] = "0" * 32
        one_line(c.post("/api/web/heartbeat"), 410, "reload the page")


# 9. start-up volumes ----------------------------------------------------------------------


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_bad_start_up_volumes_stop_the_server(
    tiny_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    nib.save(nib.Nifti1Image(np.ones((96, 96), np.float32), np.eye(4)), "2d.nii.gz")
    nan = np.random.default_rng(0).uniform(0, 1, (20, 20, 20)).astype(np.float32)
    nan[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), "nan.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros(BIG, np.uint8), np.eye(4)), "big.nii.gz")
    (tmp_path / "junk.nrrd").write_bytes(b"NRRD0004\ngarbage\n")
    ckpt = ["--checkpoint", str(tiny_checkpoint)]
    assert main(["serve", "2d.nii.gz", "nan.nii.gz", *ckpt]) == 2
    assert "cannot serve volume 2d.nii.gz: expected a 3-D volume" in _err(capsys)
    assert main(["serve", "nan.nii.gz", *ckpt]) == 2
    assert "cannot serve volume nan.nii.gz: has 1 NaN" in _err(capsys)
    assert main(["serve", "big.nii.gz", "--max-upload-mb", "16", *ckpt]) == 2
    err = _err(capsys)
    assert "big.nii.gz" in err and "decodes to 17.2 MiB" in err and "--max-upload-mb" in err
    assert main(["serve", "junk.nrrd", *ckpt]) == 2
    assert "junk.nrrd" in _err(capsys)
    (tmp_path / "nifti.nrrd").write_bytes((tmp_path / "nan.nii.gz").read_bytes())
    assert main(["serve", "nifti.nrrd", *ckpt]) == 2  # said once, not "volume cannot read"
    assert _err(capsys) == (
        "error: cannot serve volume nifti.nrrd: it holds gzip-compressed NIfTI data, "
        "not NRRD: rename it to end in .nii.gz"
    )
    (tmp_path / "picture.nrrd").write_bytes(not_volume_bytes("png"))  # was "a 2-D image"
    assert main(["serve", "picture.nrrd", *ckpt]) == 2
    assert _err(capsys).startswith(
        "error: cannot serve volume picture.nrrd: it is a PNG image, not NRRD: sammed3d reads "
        "3-D volumes ("
    )


@pytest.mark.parametrize(
    ("values", "match"),
    [
        (np.uint8([0, 1, 2]), "integer values: 0, 1, 2"),
        (np.float32([0, 0.999, 1]), "values: 0, 0.999, 1"),
    ],
    ids=["labels", "float_mask"],
)
def test_a_start_up_label_map_is_refused(tmp_path: Path, values: np.ndarray, match: str) -> None:
    """(Checked here, not through ``main``: a volume that passed would start the server.)"""
    mask = np.random.default_rng(0).choice(values, size=(20, 20, 20))
    nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp_path / "mask.nii.gz")
    with pytest.raises(VolumeError, match=f"looks like a label map \\(only 3 distinct {match}\\)"):
        check_startup_volume(tmp_path / "mask.nii.gz", LIMIT)


def test_big_start_up_volumes_get_header_checks_only(tmp_path: Path) -> None:
    nan = np.random.default_rng(0).uniform(0, 1, (20, 20, 20)).astype(np.float32)
    nan[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), tmp_path / "nan.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((96, 96), np.float32), np.eye(4)), tmp_path / "2d.nii.gz")
    assert check_startup_volume(tmp_path / "nan.nii.gz", LIMIT, full_check_bytes=0) == "header"
    with pytest.raises(ValueError, match="3-D"):
        check_startup_volume(tmp_path / "2d.nii.gz", LIMIT, full_check_bytes=0)
    with pytest.raises(
        ImageTooLarge, match="decodes to 31.2 KiB; this server accepts at most 1.0 KiB"
    ):
        check_startup_volume(tmp_path / "nan.nii.gz", 1024, full_check_bytes=0)
    (tmp_path / "picture.mha").write_bytes(not_volume_bytes("png"))  # a big one: its header
    with pytest.raises(VolumeError, match=r"picture\.mha: it is a PNG image, not MetaImage"):
        check_startup_volume(tmp_path / "picture.mha", LIMIT, full_check_bytes=0)
    good = tmp_path / "good.nii.gz"
    nib.save(nib.Nifti1Image(web_image(), AFFINE), good)
    assert check_startup_volume(good, LIMIT) == "read"
    header = read_header(good)
    assert header is not None and header.shape == SHAPE and header.dtype == np.float32


def test_a_gapped_dicom_series_is_refused_or_resampled_as_the_server_was_told(
    tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """serve's hint for a series with a missing slice names ``--irregular-slices resample``,
    which serve itself has (2026-12-03 trial: only segment had it)."""
    from tests.volumes import write_dicom_series

    folder = tmp_path / "series"
    files_, _ = write_dicom_series(folder, n=12, dz=2.5, shape=(30, 28))
    files_[6].unlink()
    ckpt = ["--checkpoint", str(tiny_checkpoint)]
    assert main(["serve", str(folder), *ckpt]) == 2
    err = _err(capsys)
    assert "1 slice(s) missing?" in err and "--irregular-slices resample (segment, serve" in err
    with pytest.raises(ValueError, match="not evenly spaced"):
        check_startup_volume(folder, LIMIT)
    assert check_startup_volume(folder, LIMIT, irregular_slices="resample") == "read"
    config = ServeConfig(volumes=(folder,), irregular_slices="resample")
    app = create_app(lambda: SamMed3DPredictor(BlobModel(32)), config)
    with running(app) as base, httpx.Client(base_url=base, timeout=30) as c:
        c.headers["X-Lease-Token"] = c.post("/api/web/claim").json()["lease_token"]
        resp = c.post("/api/web/open", json={"index": 0})
        assert resp.status_code == 200, resp.text
        assert resp.json()["shape"] == [28, 30, 12]
