"""The web page's API: uploads, clicks in millimetres through the inverse affine (on an
image whose affine flips an axis), objects, undo/redo, label-map download with the input's
geometry."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from sammed3d.inference import SamMed3DPredictor
from sammed3d.serve.app import create_app
from sammed3d.serve.config import ServeConfig
from tests.serve.helpers import BlobModel, ExtentBlobModel, running, web_client

# x is flipped (i runs towards the patient's right), y and z are not; origin off-centre
AFFINE = np.array(
    [[-1.2, 0.0, 0.0, 40.0], [0.0, 1.0, 0.0, -20.0], [0.0, 0.0, 1.5, 10.0], [0.0, 0.0, 0.0, 1.0]]
)
SHAPE = (40, 36, 30)


def web_image() -> np.ndarray:
    """A ramp along i (every i has its own value) with two bright boxes, both off-centre in i."""
    i = np.arange(SHAPE[0], dtype=np.float32)[:, None, None]
    img = 100 + 0.5 * i + np.zeros(SHAPE, np.float32)
    img[4:16, 8:28, 6:24] += 300  # object A: low i
    img[26:34, 10:20, 10:20] += 300  # object B: high i
    return img.astype(np.float32)


@pytest.fixture(scope="module")
def nifti_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("web") / "flipped.nii.gz"
    nib.save(nib.Nifti1Image(web_image(), AFFINE), path)
    return path


@pytest.fixture(scope="module")
def url(nifti_path: Path) -> Iterator[str]:
    config = ServeConfig(volumes=(nifti_path,), max_upload_bytes=16 * 2**20)
    with running(create_app(lambda: SamMed3DPredictor(BlobModel(32)), config)) as base:
        yield base


@pytest.fixture()
def client(url: str) -> Iterator[httpx.Client]:
    with web_client(url) as c:
        yield c


def mm_of(ijk) -> list[float]:  # noqa: ANN001
    return (AFFINE[:3, :3] @ np.asarray(ijk, float) + AFFINE[:3, 3]).tolist()


def apply(overlay: np.ndarray, resp: httpx.Response) -> dict:
    assert resp.status_code == 200, resp.text
    meta = json.loads(resp.headers["X-Meta"])
    if meta["bbox"] is not None:
        (x0, x1), (y0, y1), (z0, z1) = meta["bbox"]
        block = np.frombuffer(resp.content, np.uint8).reshape(
            (x1 - x0, y1 - y0, z1 - z0), order="F"
        )
        overlay[x0:x1, y0:y1, z0:z1] = block
    else:
        assert resp.content == b""
    return meta


def test_page_and_assets_are_served(url: str) -> None:
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and "niivue.umd.js" in page.text
    js = httpx.get(f"{url}/static/vendor/niivue.umd.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000
    assert "BSD" in httpx.get(f"{url}/static/vendor/NOTICE.md").text
    assert httpx.get(f"{url}/static/app.js").status_code == 200


def test_clicks_in_mm_on_a_flipped_affine(client: httpx.Client, nifti_path: Path) -> None:
    config = client.get("/api/web/config").json()
    assert config["volumes"] == ["flipped.nii.gz"]
    info = client.post("/api/web/open", json={"index": 0}).json()
    assert info["shape"] == list(SHAPE)
    np.testing.assert_allclose(info["affine"], AFFINE, atol=1e-5)

    # the image the page shows has the same grid and values
    shown = _nifti(client.get("/api/web/image.nii.gz").content)
    np.testing.assert_allclose(shown.affine, AFFINE, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(shown.dataobj), web_image())
    overlay = np.asarray(_nifti(client.get("/api/web/overlay.nii.gz").content).dataobj).copy()
    assert overlay.shape == SHAPE and overlay.dtype == np.uint8 and not overlay.any()

    image = web_image()
    # object 1: a click on object A, sent in mm; the server lands on the same voxel
    meta = apply(
        overlay, client.post("/api/web/click", json={"mm": mm_of((9, 17, 14)), "positive": True})
    )
    assert meta["voxel"] == [9, 17, 14]
    assert meta["value"] == float(image[9, 17, 14])
    assert meta["note"] is None and meta["rule"] is None  # no rule changed this click's mask
    assert overlay[5:15, 9:27, 7:23].all() and not overlay[26:34, 10:20, 10:20].any()
    assert meta["info"]["objects"] == [1] and meta["info"]["current"] == 1
    # mirrored in i, the same mm would have hit object B: the flip is honoured
    assert image[SHAPE[0] - 1 - 9, 17, 14] != image[9, 17, 14]

    # negative click removes a ball around it
    meta = apply(
        overlay, client.post("/api/web/click", json={"mm": mm_of((9, 17, 14)), "positive": False})
    )
    assert overlay[9, 17, 14] == 0 and overlay[4, 8, 6] == 1
    assert all(hi - lo < 12 for lo, hi in meta["bbox"])  # only the changed box

    # object 2 on object B
    info = client.post("/api/web/new_object").json()
    assert info["current"] == 2
    meta = apply(
        overlay, client.post("/api/web/click", json={"mm": mm_of((30, 15, 15)), "positive": True})
    )
    assert (overlay[27:33, 11:19, 11:19] == 2).all() and set(np.unique(overlay)) == {0, 1, 2}

    # undo / redo
    before = overlay.copy()
    apply(overlay, client.post("/api/web/undo"))
    assert not (overlay == 2).any()
    meta = apply(overlay, client.post("/api/web/redo"))
    np.testing.assert_array_equal(overlay, before)
    assert meta["info"]["can_undo"] and not meta["info"]["can_redo"]

    # the downloaded label map has the input's geometry and what the page shows
    resp = client.get("/api/web/labels.nii.gz")
    assert 'filename="flipped_labels.nii.gz"' in resp.headers["Content-Disposition"]
    labels = _nifti(resp.content)
    src = nib.load(nifti_path)
    np.testing.assert_allclose(labels.affine, src.affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(labels.dataobj), overlay)

    # select object 1 again and edit it
    info = client.post("/api/web/select_object", json={"label": 1}).json()
    assert info["current"] == 1


def _nifti(data: bytes) -> nib.Nifti1Image:
    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    return nib.Nifti1Image.from_bytes(raw)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nii"])
def test_upload_other_formats(client: httpx.Client, tmp_path: Path, suffix: str) -> None:
    image = sitk.GetImageFromArray(web_image().transpose(2, 1, 0))
    image.SetSpacing((0.9, 1.1, 2.0))
    image.SetOrigin((5.0, -7.0, 3.0))
    image.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))
    path = tmp_path / f"vol{suffix}"
    sitk.WriteImage(image, str(path))
    info = client.post(f"/api/web/upload?filename=vol{suffix}", content=path.read_bytes()).json()
    assert info["shape"] == list(SHAPE) and info["name"] == f"vol{suffix}"
    ijk = np.array([9.0, 17.0, 14.0])
    lps = np.asarray(image.TransformContinuousIndexToPhysicalPoint(ijk.tolist()))
    ras = (lps * [-1, -1, 1]).tolist()
    meta = json.loads(
        client.post("/api/web/click", json={"mm": ras, "positive": True}).headers["X-Meta"]
    )
    assert meta["voxel"] == [9, 17, 14]


def test_web_errors(client: httpx.Client, url: str) -> None:
    def bad(resp: httpx.Response, status: int, text: str) -> None:
        assert resp.status_code == status, resp.text
        assert text in resp.json()["detail"] and "\n" not in resp.json()["detail"]

    for method, path in [
        ("POST", "/api/web/click"),
        ("POST", "/api/web/undo"),
        ("POST", "/api/web/redo"),
        ("POST", "/api/web/new_object"),
        ("GET", "/api/web/labels.nii.gz"),
        ("GET", "/api/web/image.nii.gz"),
        ("GET", "/api/web/overlay.nii.gz"),
    ]:
        bad(client.request(method, path, json={"mm": [0, 0, 0]}), 400, "no volume is open")
    bad(client.post("/api/web/open", json={"index": 5}), 400, "no start-up volume 5")
    bad(client.post("/api/web/upload?filename=x.txt", content=b"abc"), 400, "upload one file")
    bad(
        client.post("/api/web/upload?filename=x.nii.gz", content=b"not a nifti"), 400, "cannot read"
    )
    bad(client.post("/api/web/upload", content=b"abc"), 400, "filename")
    bad(client.post("/api/web/upload?filename=x.nii.gz", content=b""), 400, "empty upload")
    bad(client.post("/api/web/upload?filename=x.nii", content=bytes(17 * 2**20)), 413, "limit")
    client.post("/api/web/open", json={"index": 0})
    bad(client.post("/api/web/click", json={"mm": [500.0, 0, 0]}), 400, "outside the image")
    bad(
        client.post("/api/web/click", json={"mm": mm_of((9, 17, 14)), "positive": False}),
        400,
        "first click",
    )
    bad(client.post("/api/web/click", json={"mm": [1, 2]}), 400, "3 finite")
    bad(client.post("/api/web/undo"), 400, "nothing to undo")
    bad(client.post("/api/web/redo"), 400, "nothing to redo")
    bad(client.post("/api/web/select_object", json={"label": 7}), 400, "no object 7")
    assert httpx.get(f"{url}/api/web/config").status_code == 200  # still serving


def test_other_extents_of_a_first_click(nifti_path: Path) -> None:
    """E in the page: the first click's mask cycles through the model's extents, smallest
    first, and the next click refines the one shown."""
    config = ServeConfig(volumes=(nifti_path,), max_upload_bytes=16 * 2**20)
    app = create_app(lambda: SamMed3DPredictor(ExtentBlobModel(32)), config)
    with running(app) as base, httpx.Client(base_url=base, timeout=30) as c:
        c.headers["X-Lease-Token"] = c.post("/api/web/claim").json()["lease_token"]
        info = c.post("/api/web/open", json={"index": 0}).json()
        assert info["can_change_extent"] is False  # no object yet
        overlay = np.zeros(SHAPE, np.uint8)
        meta = apply(overlay, c.post("/api/web/click", json={"mm": mm_of((9, 17, 14))}))
        assert meta["info"]["can_change_extent"] is True
        assert 0 < (overlay == 1).sum() <= 27  # the small ball the scores pick
        sizes = []
        for n in range(3):
            meta = apply(overlay, c.post("/api/web/extent"))
            sizes.append(int((overlay == 1).sum()))
            assert meta["extent"]["count"] == 3
            if n == 0:  # object A (as BlobModel segments it: the box, resampled)
                assert overlay[5:15, 9:27, 7:23].all() and not overlay[26:34, 10:20, 10:20].any()
        assert meta["extent"]["index"] == 0  # wrapped round to the smallest
        assert meta["extent"]["picked"] and meta["extent"]["picked_index"] == 0
        assert meta["extent"]["model_index"] == 0  # no first-click rule: the same mask
        meta = apply(overlay, c.post("/api/web/extent", json={"step": -1}))  # backwards
        assert meta["extent"]["index"] == 2 and not meta["extent"]["picked"]
        meta = apply(overlay, c.post("/api/web/extent", json={"index": 0}))
        assert meta["extent"]["index"] == 0 and (overlay == 1).sum() == sizes[2]
        for body, text in [({"step": 0}, "step"), ({"index": 7}, "0..2"), ({"index": "a"}, "type")]:
            resp = c.post("/api/web/extent", json=body)
            assert resp.status_code == 400 and text in resp.json()["detail"]
        assert 12 * 20 * 18 <= sizes[0] < 1.2 * 12 * 20 * 18
        assert sizes[1] > 2 * sizes[0] and sizes[2] <= 27
        assert meta["info"]["can_undo"]
        meta = apply(overlay, c.post("/api/web/extent"))  # object A again
        meta = apply(
            overlay, c.post("/api/web/click", json={"mm": mm_of((9, 17, 14)), "positive": False})
        )
        assert meta["info"]["can_change_extent"] is False
        assert overlay[9, 17, 14] == 0 and overlay[4, 8, 6] == 1
        resp = c.post("/api/web/extent")
        assert resp.status_code == 400 and "first click only" in resp.json()["detail"]
        c.post("/release")


def test_other_extents_need_a_multimask_model(client: httpx.Client) -> None:
    info = client.post("/api/web/open", json={"index": 0}).json()
    assert info["can_change_extent"] is False
    resp = client.post("/api/web/extent")
    assert resp.status_code == 400 and "no object" in resp.json()["detail"]
    client.post("/api/web/click", json={"mm": mm_of((9, 17, 14))})
    resp = client.post("/api/web/extent")
    assert resp.status_code == 400 and "one mask per click" in resp.json()["detail"]
    assert "\n" not in resp.json()["detail"]
