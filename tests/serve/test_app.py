"""HTTP behaviour of the app: bad input gets a 4xx with a one-line message, and the server
keeps serving afterwards (in-process server on a loopback port)."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from sammed3d.inference import SamMed3DPredictor
from sammed3d.serve.app import create_app
from sammed3d.serve.config import ServeConfig
from sammed3d.serve.wire import encode_array
from tests.serve.helpers import BlobModel, phantom, running

KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
SHAPE = (24, 26, 28)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    config = ServeConfig(api_key=KEY, max_sessions=3, max_upload_bytes=4 * 2**20)
    app = create_app(lambda: SamMed3DPredictor(BlobModel(32)), config)
    with running(app) as base:
        yield base


@pytest.fixture()
def client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as c:
        token = c.post("/claim").json()["lease_token"]
        c.headers["X-Lease-Token"] = token
        yield c
        c.post("/release")


def image_body(array: np.ndarray) -> bytes:
    return encode_array(array, codec="ZSTD")


def set_image(client: httpx.Client, body: bytes, meta: dict | None = None) -> httpx.Response:
    meta = {"image_properties": {"spacing": [1.0, 1.0, 1.0]}} if meta is None else meta
    return client.post("/set_image", content=body, headers={"X-Meta": json.dumps(meta)})


def one_line_error(resp: httpx.Response, status: int, text: str) -> None:
    assert resp.status_code == status, resp.text
    detail = resp.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and text in detail, detail


def works(client: httpx.Client) -> None:
    """A whole valid interaction on this lease (the server still serves)."""
    assert client.get("/healthz").json() == {"ok": True}
    resp = set_image(client, image_body(phantom(SHAPE)[None]))
    assert resp.json() == {"original_image_shape": [1, *SHAPE]}
    assert (
        client.post("/set_target_buffer", json={"shape": list(SHAPE), "dtype": "uint8"}).status_code
        == 200
    )
    click = client.post(
        "/add_point_interaction", json={"coordinates": [12, 13, 14], "include_interaction": True}
    )
    assert click.status_code == 200
    meta = json.loads(click.headers["X-Meta"])
    assert meta["ran_prediction"] is True and meta["bbox"] is not None


GOOD = image_body(phantom(SHAPE)[None])


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        (GOOD[: len(GOOD) // 2], 400, "truncated"),
        (GOOD[:30], 400, "truncated"),
        (b"garbage" * 10, 400, "NNIA"),
        (image_body(phantom((30, 40, 1))[:, :, 0]), 400, "4-D"),  # a 2-D image
        (image_body(phantom((3, 30, 40))[None, :1]), 400, "at least 2 voxels"),  # one slice
        (image_body(np.stack([phantom(SHAPE)] * 2)), 400, "channels"),
        (image_body(np.where(phantom(SHAPE) > 200, np.nan, phantom(SHAPE))[None]), 400, "NaN"),
        (image_body(np.full((1, *SHAPE), 7.0, np.float32)), 400, "constant"),
        (image_body(np.ones((1, *SHAPE), bool)), 400, "boolean"),
        (image_body((phantom(SHAPE) > 200).astype(np.uint8)[None]), 400, "label map"),
        (image_body((phantom(SHAPE) > 200)[None] * np.float32(0.999)), 400, "distinct values"),
    ],
    ids=[
        "half",
        "header-only",
        "garbage",
        "2d",
        "one-slice",
        "2-channels",
        "nan",
        "constant",
        "bool",
        "label-map",
        "float-mask",
    ],
)
def test_bad_images(client: httpx.Client, body: bytes, status: int, text: str) -> None:
    one_line_error(set_image(client, body), status, text)
    works(client)


def _header(dtype: bytes, shape: tuple[int, ...]) -> bytes:
    head = struct.pack("<4sBBBB", b"NNIA", 1, 1, len(shape), len(dtype)) + dtype
    return head + struct.pack(f"<{len(shape)}q", *shape) + struct.pack("<I", 0)


def test_wrong_dtype_and_huge_shape_in_the_header(client: httpx.Client) -> None:
    one_line_error(set_image(client, _header(b"complex64", (1, 4, 4, 4))), 400, "unsupported dtype")
    one_line_error(set_image(client, _header(b"float32", (1, 4096, 4096, 4096))), 413, "MiB")
    too_big = bytes(5 * 2**20)
    one_line_error(set_image(client, too_big), 413, "limit")
    works(client)


def test_bad_meta_and_json(client: httpx.Client) -> None:
    resp = client.post("/set_image", content=GOOD, headers={"X-Meta": "{not json"})
    one_line_error(resp, 400, "X-Meta")
    one_line_error(
        set_image(client, GOOD, {"image_properties": {"spacing": [1, -1, 1]}}), 400, "spacing"
    )
    one_line_error(set_image(client, GOOD, {"image_properties": {"affine": [[1]]}}), 400, "4x4")
    assert set_image(client, GOOD).status_code == 200
    one_line_error(client.post("/set_target_buffer", content=b"[1, 2"), 400, "JSON")
    one_line_error(client.post("/set_target_buffer", json=[1, 2]), 400, "JSON object")
    one_line_error(client.post("/set_target_buffer", json={"dtype": "uint8"}), 400, "shape")
    one_line_error(
        client.post("/set_target_buffer", json={"shape": [1, 2, 3], "dtype": "uint8"}),
        400,
        "must equal",
    )
    one_line_error(
        client.post("/set_target_buffer", json={"shape": list(SHAPE), "dtype": "float32"}),
        400,
        "integer",
    )
    one_line_error(
        client.post(
            "/add_point_interaction", json={"coordinates": [1, 2, 3], "include_interaction": True}
        ),
        400,
        "set_target_buffer",
    )
    works(client)
    for coords, text in [
        ([99, 1, 1], "outside the image"),
        ([1, 2], "3 finite"),
        (["a", 1, 2], "3 "),
    ]:
        resp = client.post(
            "/add_point_interaction", json={"coordinates": coords, "include_interaction": True}
        )
        one_line_error(resp, 400, text)
    resp = client.post("/add_point_interaction", json={"coordinates": [1, 2, 3]})
    one_line_error(resp, 400, "include_interaction")
    one_line_error(client.post("/set_do_autozoom", json={"do_autozoom": "yes"}), 400, "do_autozoom")
    for path in (
        "/add_bbox_interaction",
        "/add_scribble_interaction",
        "/add_lasso_interaction",
        "/add_initial_seg_interaction",
    ):
        one_line_error(client.post(path, json={}), 400, "not supported")
    works(client)


def test_leases_and_api_key(url: str, client: httpx.Client) -> None:
    for headers, status, text in [
        ({}, 401, "missing API key"),
        ({"Authorization": "Bearer wrong"}, 401, "wrong API key"),
        ({"Authorization": "Basic abc"}, 401, "missing API key"),
    ]:
        one_line_error(httpx.post(f"{url}/claim", headers=headers), status, text)
        one_line_error(httpx.get(f"{url}/capabilities", headers=headers), status, text)
    assert httpx.get(f"{url}/healthz").status_code == 200  # no key needed to probe
    one_line_error(
        httpx.post(f"{url}/set_image", headers=AUTH, content=GOOD), 410, "lease token missing"
    )
    bad = dict(AUTH, **{"X-Lease-Token": "0" * 32})
    one_line_error(
        httpx.post(f"{url}/set_image", headers=bad, content=GOOD), 410, "expired or unknown"
    )
    one_line_error(httpx.post(f"{url}/heartbeat", headers=bad), 410, "expired or unknown")
    one_line_error(httpx.get(f"{url}/lease_status", headers=bad), 410, "expired or unknown")
    assert httpx.post(f"{url}/release", headers=bad).json() == {"released": True}  # idempotent
    # a web lease cannot drive the protocol endpoints, and the other way round
    web = httpx.post(f"{url}/api/web/claim", headers=AUTH).json()["lease_token"]
    try:
        resp = httpx.post(
            f"{url}/set_image", headers=dict(AUTH, **{"X-Lease-Token": web}), content=GOOD
        )
        one_line_error(resp, 410, "web session")
        one_line_error(
            client.post("/api/web/click", json={"mm": [0, 0, 0]}), 410, "nninteractive session"
        )
    finally:
        httpx.post(f"{url}/release", headers=dict(AUTH, **{"X-Lease-Token": web}))
    status = client.get("/lease_status").json()
    assert status["idle_timeout_seconds"] == 600.0 and status["remaining_seconds"] > 590
    works(client)


def test_capacity(url: str, client: httpx.Client) -> None:
    tokens = [httpx.post(f"{url}/claim", headers=AUTH).json()["lease_token"] for _ in range(2)]
    try:
        resp = httpx.post(f"{url}/claim", headers=AUTH)
        one_line_error(resp, 503, "capacity")
        assert resp.headers["Retry-After"] == "10"
    finally:
        for t in tokens:
            httpx.post(f"{url}/release", headers=dict(AUTH, **{"X-Lease-Token": t}))
    works(client)


def test_capabilities(client: httpx.Client) -> None:
    caps = client.get("/capabilities").json()
    for key in (
        "supported_interactions",
        "channel_mapping",
        "num_interaction_channels",
        "supports_initial_label",
        "supports_zero_shot_label_refinement",
        "preferred_scribble_thickness",
        "interaction_decay",
        "inference_session_version",
    ):
        assert key in caps  # the client reads each of these with caps[key]
    assert caps["supported_interactions"] == {
        "points": True,
        "bbox2d": False,
        "bbox3d": False,
        "scribble": False,
        "lasso": False,
    }
    assert caps["patch_size"] == [32, 32, 32] and caps["supports_undo"] is True


class Exploding(BlobModel):
    def decode(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        raise RuntimeError("model exploded\nsecond line")


def test_a_bug_is_a_one_line_500_and_the_server_goes_on() -> None:
    app = create_app(lambda: SamMed3DPredictor(Exploding(32)))
    with running(app) as base, httpx.Client(base_url=base, timeout=30) as c:
        c.headers["X-Lease-Token"] = c.post("/claim").json()["lease_token"]
        assert set_image(c, GOOD).status_code == 200
        c.post("/set_target_buffer", json={"shape": list(SHAPE), "dtype": "uint8"})
        resp = c.post(
            "/add_point_interaction",
            json={"coordinates": [12, 13, 14], "include_interaction": True},
        )
        one_line_error(resp, 500, "model exploded")
        for _ in range(3):  # the same keep-alive connection goes on working
            assert c.get("/healthz").status_code == 200
            assert c.post("/heartbeat").status_code == 200
            resp = c.post("/add_point_interaction", json={"coordinates": [1, 2, 3]})
            one_line_error(resp, 400, "include_interaction")


def test_host_check_blocks_dns_rebinding() -> None:
    config = ServeConfig(allowed_hosts=("127.0.0.1", "localhost", "::1"))
    with running(create_app(lambda: SamMed3DPredictor(BlobModel(32)), config)) as base:
        assert httpx.get(f"{base}/healthz").status_code == 200
        port = base.rsplit(":", 1)[1]
        assert (
            httpx.get(f"{base}/healthz", headers={"Host": f"localhost:{port}"}).status_code == 200
        )
        evil = httpx.post(f"{base}/claim", headers={"Host": f"attacker.example:{port}"})
        one_line_error(evil, 400, "attacker.example")


def test_sessions_are_reaped_when_the_client_goes_silent() -> None:
    # margins wide enough for a loaded 2-core machine (a heartbeat may take a second there)
    config = ServeConfig(liveness_timeout=2.0, sweep_interval=0.1)
    with running(create_app(lambda: SamMed3DPredictor(BlobModel(32)), config)) as base:
        token = httpx.post(f"{base}/claim").json()["lease_token"]
        headers = {"X-Lease-Token": token}
        for _ in range(4):  # heartbeats keep it alive past the timeout
            time.sleep(0.7)
            assert httpx.post(f"{base}/heartbeat", headers=headers).status_code == 200
        time.sleep(3.0)  # silence: reaped, its slot and memory freed
        one_line_error(httpx.post(f"{base}/heartbeat", headers=headers), 410, "expired")
