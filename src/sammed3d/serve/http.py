"""HTTP plumbing shared by the routes: one-line JSON errors, body and header parsing, the
``Host`` check. No route lives here."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sammed3d.serve.images import ImageTooLarge
from sammed3d.serve.leases import LeaseGone, ServerFull
from sammed3d.serve.protocol import SessionClosed
from sammed3d.serve.wire import WireError

logger = logging.getLogger(__name__)

#: Header with JSON metadata next to a binary body (nnInteractive's ``META_HEADER``).
META_HEADER = "X-Meta"
#: Header with the lease token (nnInteractive's ``LEASE_HEADER``).
LEASE_HEADER = "X-Lease-Token"
OCTET = "application/octet-stream"
MAX_JSON_BYTES = 1 << 20


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """``{"detail": "<message on one line>"}`` with ``status``."""
    line = " ".join(str(message).split()) or "error"
    return JSONResponse({"detail": line}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Map every expected failure to a one-line 4xx, and a bug to a one-line 500."""

    def handle(kind: type[BaseException], status: int | None = None, **headers: str) -> None:
        async def handler(_request: Request, exc: Any) -> JSONResponse:
            code = status if status is not None else int(getattr(exc, "status", 400))
            return error(code, str(exc), dict(headers) or None)

        app.add_exception_handler(kind, handler)

    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error(400, f"invalid request: {where}: {first.get('msg', 'bad value')}")

    async def memory_error(_request: Request, exc: MemoryError) -> JSONResponse:
        return error(413, str(exc) or "out of memory: the request is too large")

    @app.middleware("http")
    async def catch_bugs(request: Request, call_next: Callable[..., Any]) -> Any:
        # A bug becomes a one-line 500 here, inside the app: an exception handler for
        # Exception would answer too, but Starlette then re-raises and the server drops the
        # connection, so a keep-alive client's next request fails.
        try:
            return await call_next(request)
        except Exception as exc:
            logger.error("error in %s %s", request.method, request.url.path, exc_info=exc)
            return error(500, f"internal error: {type(exc).__name__}: {exc}")

    app.add_exception_handler(StarletteHTTPException, http_error)  # also 404/405
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    handle(LeaseGone, 410)
    handle(SessionClosed, 410)
    handle(ServerFull, 503, **{"Retry-After": "10"})
    handle(WireError)  # 400, or 413 for too large
    handle(ImageTooLarge)  # 413 (a VolumeError: before ValueError's handler in the MRO)
    handle(FileNotFoundError, 404)
    app.add_exception_handler(MemoryError, memory_error)  # type: ignore[arg-type]
    handle(ValueError, 400)  # VolumeError is a ValueError


def host_name(header: str) -> str:
    """The host of a ``Host`` header, without port or IPv6 brackets, lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def install_host_check(app: FastAPI, allowed_hosts: Iterable[str]) -> None:
    """Answer 400 to requests addressed to another host (DNS rebinding)."""
    allowed = {h.lower().strip("[]") for h in allowed_hosts}

    @app.middleware("http")
    async def check_host(request: Request, call_next: Callable[..., Any]) -> Any:
        host = host_name(request.headers.get("host", ""))
        if host not in allowed:
            return error(
                400,
                f"this server answers requests addressed to {', '.join(sorted(allowed))}, "
                f"not to {host or '(no Host header)'!r}",
            )
        return await call_next(request)


async def read_body(request: Request, limit: int) -> bytearray:
    """The request body, refused with 413 as soon as it is known to exceed ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise HTTPException(400, f"bad Content-Length {declared!r}") from None
        if size > limit:
            raise HTTPException(
                413,
                f"request body of {size / 2**20:.1f} MiB exceeds this server's limit of "
                f"{limit / 2**20:.1f} MiB (--max-upload-mb)",
            )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(
                413, f"request body exceeds this server's limit of {limit / 2**20:.1f} MiB"
            )
    return body


async def read_json(request: Request) -> dict[str, Any]:
    """A JSON object body (empty body: ``{}``), else 400."""
    raw = await read_body(request, MAX_JSON_BYTES)
    if not raw.strip():
        return {}
    try:
        payload = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise HTTPException(400, f"body must be a JSON object, got {type(payload).__name__}")
    return payload


def parse_meta(request: Request) -> dict[str, Any]:
    """The JSON object of the ``X-Meta`` header (``{}`` if absent), else 400."""
    raw = request.headers.get(META_HEADER)
    if raw is None:
        return {}
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise HTTPException(400, f"bad {META_HEADER} header: {exc}") from None
    if not isinstance(meta, dict):
        raise HTTPException(400, f"{META_HEADER} must be a JSON object")
    return meta


def field(payload: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """A required field of type ``kind`` (booleans are not integers here), else 400."""
    if name not in payload:
        raise HTTPException(400, f"missing required field: {name}")
    value = payload[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool)):
        raise HTTPException(400, f"field {name} has the wrong type: {value!r}")
    return value


def flag(payload: dict[str, Any], name: str, default: bool) -> bool:
    """An optional true/false field, else 400."""
    value = payload.get(name, default)
    if not isinstance(value, bool | int):
        raise HTTPException(400, f"field {name} must be true or false, got {value!r}")
    return bool(value)


def timing_header(timings: dict[str, float]) -> dict[str, str]:
    """``Server-Timing`` (milliseconds per step; browsers' dev tools show it)."""
    if not timings:
        return {}
    return {"Server-Timing": ", ".join(f"{k};dur={1000 * v:.2f}" for k, v in timings.items())}
