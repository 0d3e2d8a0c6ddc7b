"""Helpers for the server tests: phantoms, a model with a known answer, servers on loopback.

Two ways to run a server, both on 127.0.0.1 with a free port (no other address is used):

* :func:`cli_server`: the real ``sammed3d serve`` command in a subprocess (conformance).
* :func:`running`: ``create_app`` under uvicorn in a thread of the test process, for tests
  that need a particular model (:class:`BlobModel`) or many quick requests.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

REPO = Path(__file__).resolve().parents[2]
#: Where tests keep artefacts worth looking at (screenshots); gitignored.
ARTEFACTS = Path(os.environ.get("SAMMED3D_ARTEFACTS", REPO / ".artefacts"))
TINY_SEED = 1  # default-initialised sam_med3d_tiny whose masks on the phantom are non-trivial


def tiny_model() -> torch.nn.Module:
    """``sam_med3d_tiny`` with PyTorch's default initialisation (seeded)."""
    from sammed3d import build_model

    torch.manual_seed(TINY_SEED)
    return build_model("sam_med3d_tiny")


def phantom(shape: tuple[int, int, int] = (36, 40, 48), seed: int = 0) -> np.ndarray:
    """Noisy background (~100) with a bright box (~300), float32, array order as given."""
    rng = np.random.default_rng(seed)
    img = (100 + rng.uniform(0, 8, shape)).astype(np.float32)
    a, b, c = shape
    img[a * 5 // 18 : a * 25 // 36, b * 3 // 10 : b * 3 // 4, c * 5 // 16 : c * 35 // 48] += 200
    return img


class BlobModel(torch.nn.Module):
    """A stand-in for SAM-Med3D whose answer is known: the bright connected region under
    the newest positive click (ROI tensor order), united with the previous mask, minus a
    ball of 3 voxels around each negative click."""

    def __init__(self, img_size: int = 32) -> None:
        super().__init__()
        self._dummy = torch.nn.Parameter(torch.zeros(1))
        self.img_size = img_size
        self.low_res_size = (img_size,) * 3

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    def decode(
        self, image_embeddings, point_coords, point_labels, mask_input, multimask_output=False
    ):  # noqa: ANN001, ANN201, E501
        img = image_embeddings[0, 0].numpy()
        out = np.zeros(img.shape, dtype=bool)
        if mask_input is not None:
            out |= mask_input[0, 0].numpy() > 0
        comps, _ = ndimage.label(img > (img.max() + img.min()) / 2)
        grid = np.indices(img.shape)
        for p, lab in zip(point_coords[0].tolist(), point_labels[0].tolist(), strict=True):
            r = tuple(int(round(v)) for v in p)
            if lab == 1 and comps[r]:
                out |= comps == comps[r]
            elif lab == 0:
                out &= sum((grid[a] - r[a]) ** 2 for a in range(3)) > 9
        logits = torch.from_numpy(np.where(out, 10.0, -10.0).astype(np.float32))[None, None]
        return logits, torch.ones(1, 1)

    def upsample_logits(self, low_res: torch.Tensor) -> torch.Tensor:
        return F.interpolate(low_res, size=(self.img_size,) * 3, mode="nearest")


class ExtentBlobModel(BlobModel):
    """:class:`BlobModel` that also offers three extents at a first click (as a model trained
    with ``first_click_multimask``): a ball of 1 voxel around the click (the one its scores
    pick), the bright region under the click, and the whole ROI."""

    first_click_multimask = True

    def decode(
        self, image_embeddings, point_coords, point_labels, mask_input, multimask_output=False
    ):  # noqa: ANN001, ANN201, E501
        low, iou = super().decode(image_embeddings, point_coords, point_labels, mask_input)
        if not multimask_output:
            return low, iou
        img = image_embeddings[0, 0].numpy()
        grid = np.indices(img.shape)
        r = [float(v) for v in point_coords[0, 0]]
        ball = sum((grid[a] - round(r[a])) ** 2 for a in range(3)) <= 1
        masks = np.stack([ball, low[0, 0].numpy() > 0, np.ones_like(ball)])
        logits = torch.from_numpy(np.where(masks, 10.0, -10.0).astype(np.float32))[None]
        return logits, torch.tensor([[0.9, 0.3, 0.5]])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(app) -> Iterator[str]:  # noqa: ANN001
    """Serve ``app`` on 127.0.0.1 in a thread; yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # NODELAY
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("in-process server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@contextmanager
def web_client(url: str) -> Iterator[httpx.Client]:
    """An HTTP client of the server at ``url`` holding a web lease (released afterwards)."""
    with httpx.Client(base_url=url, timeout=30) as c:
        c.headers["X-Lease-Token"] = c.post("/api/web/claim").json()["lease_token"]
        yield c
        c.post("/release")


@contextmanager
def cli_server(*args: str, timeout: float = 120.0) -> Iterator[tuple[str, subprocess.Popen]]:
    """``python -m sammed3d serve --port 0 ARGS`` in a subprocess; yields (URL, process)."""
    cmd = [sys.executable, "-m", "sammed3d", "serve", "--host", "127.0.0.1", "--port", "0", *args]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("SAMMED3D_API_KEY", None)
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=env,
        cwd=REPO,
    )
    lines: list[str] = []
    url = None
    deadline = time.monotonic() + timeout
    try:
        assert proc.stdout is not None
        while url is None:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("sammed3d serve exited early:\n" + "".join(lines))
            lines.append(line)
            found = re.search(r"nnInteractive server URL: +(http://\S+)", line)
            if found:
                url = found.group(1)
            if time.monotonic() > deadline:
                raise RuntimeError("sammed3d serve did not start:\n" + "".join(lines))
        drain = threading.Thread(target=lambda: [lines.append(x) for x in proc.stdout], daemon=True)  # type: ignore[union-attr]
        drain.start()
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
