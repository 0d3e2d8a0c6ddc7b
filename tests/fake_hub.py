"""A loopback HTTP server that answers like the Hugging Face Hub's file endpoint.

``HEAD/GET {endpoint}/{repo}/resolve/{revision}/{filename}``: the headers ``huggingface_hub``
needs (``X-Repo-Commit``, ``ETag`` = the SHA-256 of the body as for an LFS file,
``Content-Length``, ``Accept-Ranges``), ``Range: bytes=N-`` answered with 206, 404 with
``X-Error-Code: EntryNotFound`` for unknown files. Faults for tests: drop the connection
halfway through a body, refuse resumption, answer with an HTTP error. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class HostedFile:
    body: bytes
    #: Faults: "drop_first_get" (cut the first GET halfway), "drop_every_get" (cut every GET
    #: and answer a resumption with 416), "get_500", "head_403".
    fault: str = ""
    etag: str | None = None  # default: SHA-256 of body
    gets: int = 0

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


@dataclass
class FakeHub:
    files: dict[tuple[str, str], HostedFile] = field(default_factory=dict)
    log: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, Range
    server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def host(self, repo: str, filename: str, body: bytes, **kw: object) -> HostedFile:
        f = HostedFile(body, **kw)  # type: ignore[arg-type]
        self.files[(repo, filename)] = f
        return f

    def start(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(head=True)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(head=False)

            def _answer(self, head: bool) -> None:
                rng = self.headers.get("Range")
                hub.log.append(("HEAD" if head else "GET", self.path, rng))
                m = re.fullmatch(r"/(.+)/resolve/([^/]+)/(.+)", self.path.split("?")[0])
                f = hub.files.get((unquote(m.group(1)), unquote(m.group(3)))) if m else None
                if f is None:
                    self._empty(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT})
                    return
                if head and f.fault == "head_403":
                    self._empty(403, {})
                    return
                headers = {
                    "X-Repo-Commit": COMMIT,
                    "ETag": f'"{f.etag or f.sha256}"',
                    "Accept-Ranges": "bytes",
                    "Content-Type": "application/octet-stream",
                }
                if head:
                    self._send(200, headers, len(f.body), b"")
                    return
                f.gets += 1
                start = 0
                if rng:
                    if f.fault == "drop_every_get":  # a host that cannot resume
                        self._empty(416, {"Content-Range": f"bytes */{len(f.body)}"})
                        return
                    start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))  # type: ignore[union-attr]
                if f.fault == "get_500":
                    self._empty(500, {})
                    return
                body = f.body[start:]
                if start:
                    headers["Content-Range"] = f"bytes {start}-{len(f.body) - 1}/{len(f.body)}"
                cut = f.fault == "drop_every_get" or (f.fault == "drop_first_get" and f.gets == 1)
                sent = body[: len(body) // 2] if cut else body
                self._send(206 if start else 200, headers, len(body), sent)
                if cut:
                    self.close_connection = True

            def _empty(self, code: int, headers: dict[str, str]) -> None:
                self._send(code, headers, 0, b"")

            def _send(self, code: int, headers: dict[str, str], length: int, body: bytes) -> None:
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                if body:
                    self.wfile.write(body)
                    self.wfile.flush()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def requests(self, method: str | None = None) -> list[tuple[str, str, str | None]]:
        return [r for r in self.log if method is None or r[0] == method]


def start_loopback_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeHub:
    """Start a :class:`FakeHub` and point huggingface_hub and sammed3d at it.

    ``HF_ENDPOINT`` is the loopback server, ``HF_HOME`` and ``SAMMED3D_HOME`` are empty folders
    under ``tmp_path``, offline mode and proxies are off. huggingface_hub reads some settings
    once at import, so its offline flag is patched too, and its telemetry (which would call the
    import-time endpoint) is off; :func:`guard_loopback` fails a test that tries any other host.
    """
    fake = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("SAMMED3D_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for var in (
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_HUB_DISABLE_PROGRESS_BARS",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
    ):
        monkeypatch.delenv(var, raising=False)
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", True)
    return fake


def guard_loopback(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Make every socket connection outside 127.0.0.0/8 (and ::1) fail; returns the attempts."""
    refused: list[object] = []
    real_connect = socket.socket.connect

    def guarded(sock: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else None
        try:
            ok = host is None or ipaddress.ip_address(host).is_loopback
        except ValueError:
            ok = host == "localhost"
        if not ok:
            refused.append(address)
            raise ConnectionRefusedError(f"test: no traffic outside loopback ({address})")
        real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    return refused
