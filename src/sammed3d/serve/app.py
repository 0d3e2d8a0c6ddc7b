"""The FastAPI application of ``sammed3d serve``: nnInteractive v2 protocol + web page.

Routes (all but ``/healthz``, ``/`` and ``/static/*`` need the API key when one is set):

* nnInteractive protocol (the paths of ``nnInteractive.inference.remote._protocol``):
  ``POST /claim``, ``/release``, ``/heartbeat``, ``GET /lease_status``, ``/capabilities``,
  ``POST /set_image`` (NNIA body + ``X-Meta``), ``/set_target_buffer``,
  ``/set_do_autozoom``, ``/reset_interactions``, ``/add_point_interaction``, ``/predict``,
  ``/undo``. ``/add_bbox_interaction``, ``/add_scribble_interaction``,
  ``/add_lasso_interaction`` and ``/add_initial_seg_interaction`` answer 400 (points only).
* web page: ``GET /`` and ``/static/...``; its API under ``/api/web/``.

Errors are JSON ``{"detail": "<one line>"}``: 400 bad input, 401 API key, 404, 410 lease
gone, 413 too large, 503 full (with ``Retry-After``); a bug is a 500 with a one-line
detail, logged with its traceback, and the server keeps serving.

Concurrency: each lease has a lock (a client's requests run one at a time); the model runs
under one lock shared by every session; uploads are read and decoded off the event loop so
heartbeats stay answered during a long upload.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from importlib import resources
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from sammed3d.inference.predictor import SamMed3DPredictor
from sammed3d.serve.config import ServeConfig
from sammed3d.serve.leases import Lease, LeaseGone, LeaseRegistry, ServerFull
from sammed3d.serve.patch import Patch
from sammed3d.serve.protocol import ProtocolSession, Reply, SessionClosed
from sammed3d.serve.web import WebSession
from sammed3d.serve.wire import WireError, decode_array, encode_array

logger = logging.getLogger(__name__)

META_HEADER = "X-Meta"
LEASE_HEADER = "X-Lease-Token"
OCTET = "application/octet-stream"
MAX_JSON_BYTES = 1 << 20
KIND_PROTOCOL = "nninteractive"
KIND_WEB = "web"

SessionState = ProtocolSession | WebSession


def host_name(header: str) -> str:
    """The host of a ``Host`` header, without port or IPv6 brackets, lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def static_dir() -> Any:
    """The packaged web assets (``index.html``, ``app.js``, ``vendor/niivue.umd.js``...)."""
    return resources.files("sammed3d.serve") / "static"


def create_app(
    make_predictor: Callable[[], SamMed3DPredictor],
    config: ServeConfig | None = None,
) -> FastAPI:
    """Build the app.

    Args:
        make_predictor: Returns a new predictor per session; they should share one model
            (e.g. ``lambda: SamMed3DPredictor(model)``).
        config: Limits and behaviour (default :class:`ServeConfig`).
    """
    cfg = config or ServeConfig()
    compute_lock = threading.Lock()
    patch_size = None

    def make_state(kind: str) -> SessionState:
        predictor = make_predictor()
        if kind == KIND_WEB:
            return WebSession(predictor, compute_lock=compute_lock, modality=cfg.modality)
        return ProtocolSession(
            predictor,
            compute_lock=compute_lock,
            orientation=cfg.orientation,
            modality=cfg.modality,
            max_buffer_bytes=cfg.max_upload_bytes,
        )

    registry: LeaseRegistry[SessionState] = LeaseRegistry(
        make_state,
        max_sessions=cfg.max_sessions,
        idle_timeout=cfg.idle_timeout,
        liveness_timeout=cfg.liveness_timeout,
        close=lambda state: state.close(),
    )
    probe = make_predictor()
    patch_size = [int(probe.roi_size)] * 3
    do_autozoom = bool(probe.extend)
    del probe

    @asynccontextmanager
    async def lifespan(_app: FastAPI):  # noqa: ANN202
        async def reaper() -> None:
            while True:
                await asyncio.sleep(cfg.sweep_interval)
                try:
                    await run_in_threadpool(registry.sweep)
                except Exception:  # never let the reaper die
                    logger.exception("error while reaping sessions")

        task = asyncio.create_task(reaper())
        try:
            yield
        finally:
            task.cancel()
            registry.close_all()

    app = FastAPI(title="sammed3d serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.registry = registry
    app.state.config = cfg

    # ----------------------------------------------------------------------------- errors

    def _detail(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        line = " ".join(str(message).split()) or "error"
        return JSONResponse({"detail": line}, status_code=status, headers=headers)

    @app.exception_handler(StarletteHTTPException)  # FastAPI's HTTPException and 404/405
    async def _http_error(_r: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _detail(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_r: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _detail(400, f"invalid request: {where}: {first.get('msg', 'bad value')}")

    @app.exception_handler(LeaseGone)
    async def _gone(_r: Request, exc: LeaseGone) -> JSONResponse:
        return _detail(410, str(exc))

    @app.exception_handler(SessionClosed)
    async def _closed(_r: Request, exc: SessionClosed) -> JSONResponse:
        return _detail(410, str(exc))

    @app.exception_handler(ServerFull)
    async def _full(_r: Request, exc: ServerFull) -> JSONResponse:
        return _detail(503, str(exc), {"Retry-After": "10"})

    @app.exception_handler(WireError)
    async def _wire(_r: Request, exc: WireError) -> JSONResponse:
        return _detail(exc.status, str(exc))

    @app.exception_handler(FileNotFoundError)
    async def _not_found(_r: Request, exc: FileNotFoundError) -> JSONResponse:
        return _detail(404, str(exc))

    @app.exception_handler(MemoryError)
    async def _memory(_r: Request, exc: MemoryError) -> JSONResponse:
        return _detail(413, str(exc) or "out of memory: the request is too large")

    @app.exception_handler(ValueError)  # VolumeError is a ValueError
    async def _bad_value(_r: Request, exc: ValueError) -> JSONResponse:
        return _detail(400, str(exc))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        logger.error("error in %s %s", request.method, request.url.path, exc_info=exc)
        return _detail(500, f"internal error: {type(exc).__name__}: {exc}")

    if cfg.allowed_hosts is not None:
        allowed = {h.lower().strip("[]") for h in cfg.allowed_hosts}

        @app.middleware("http")
        async def check_host(request: Request, call_next: Callable[..., Any]) -> Any:
            host = host_name(request.headers.get("host", ""))
            if host not in allowed:
                return _detail(
                    400,
                    f"this server answers requests addressed to {', '.join(sorted(allowed))}, "
                    f"not to {host or '(no Host header)'!r}",
                )
            return await call_next(request)

    # ------------------------------------------------------------------------- auth/lease

    def require_auth(authorization: str | None = Header(default=None)) -> None:
        if cfg.api_key is None:
            return
        bearer = "Bearer "
        if not authorization or not authorization.startswith(bearer):
            raise HTTPException(
                401,
                "missing API key: send 'Authorization: Bearer <key>' (this server was started "
                "with an API key)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not secrets.compare_digest(authorization[len(bearer) :].encode(), cfg.api_key.encode()):
            raise HTTPException(401, "wrong API key", headers={"WWW-Authenticate": "Bearer"})

    auth = [Depends(require_auth)]

    def lease_of(kind: str | None) -> Callable[..., Lease[SessionState]]:
        def dependency(
            x_lease_token: str | None = Header(default=None, alias=LEASE_HEADER),
        ) -> Lease[SessionState]:
            return registry.get(x_lease_token, kind=kind)

        return dependency

    protocol_lease = Depends(lease_of(KIND_PROTOCOL))
    web_lease = Depends(lease_of(KIND_WEB))
    any_lease = Depends(lease_of(None))

    def run_locked(lease: Lease[SessionState], fn: Callable[[Any], Any]) -> Any:
        """``fn(state)`` under the lease's lock, as a user action."""
        lease.mark_active()
        with lease.lock:
            return fn(lease.state)

    async def read_body(request: Request, limit: int) -> bytearray:
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
        chunks = bytearray()
        async for chunk in request.stream():
            chunks += chunk
            if len(chunks) > limit:
                raise HTTPException(
                    413, f"request body exceeds this server's limit of {limit / 2**20:.1f} MiB"
                )
        return chunks

    async def read_json(request: Request) -> dict[str, Any]:
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
        if name not in payload:
            raise HTTPException(400, f"missing required field: {name}")
        value = payload[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool)):
            raise HTTPException(400, f"field {name} has the wrong type: {value!r}")
        return value

    def flag(payload: dict[str, Any], name: str, default: bool) -> bool:
        value = payload.get(name, default)
        if not isinstance(value, bool | int):
            raise HTTPException(400, f"field {name} must be true or false, got {value!r}")
        return bool(value)

    # ------------------------------------------------------------------ protocol: leases

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/capabilities", dependencies=auth)
    def capabilities() -> dict[str, Any]:
        from sammed3d import __version__

        return {
            "supported_interactions": {
                "points": True,
                "bbox2d": False,
                "bbox3d": False,
                "scribble": False,
                "lasso": False,
            },
            "channel_mapping": {"prev_seg": 0, "points": [1, 2]},
            "num_interaction_channels": 3,
            "supports_initial_label": False,
            "supports_zero_shot_label_refinement": False,
            "preferred_scribble_thickness": [2, 2, 2],
            "interaction_decay": None,
            "patch_size": patch_size,
            "do_autozoom": do_autozoom,
            "inference_session_version": __version__,
            "license": cfg.weights_license,
            "supports_undo": True,
            "server": "sammed3d",
            "model": cfg.model_name,
            "orientation": cfg.orientation,
        }

    def claim_body(lease: Lease[SessionState]) -> dict[str, Any]:
        return {
            "lease_token": lease.token,
            "idle_timeout_seconds": registry.idle_timeout,
            "liveness_timeout_seconds": registry.liveness_timeout,
            "max_sessions": registry.max_sessions,
        }

    @app.post("/claim", dependencies=auth)
    def claim() -> dict[str, Any]:
        return claim_body(registry.claim(KIND_PROTOCOL))

    @app.post("/release", dependencies=auth)
    def release(x_lease_token: str | None = Header(default=None, alias=LEASE_HEADER)) -> dict:
        registry.release(x_lease_token)
        return {"released": True}

    @app.post("/heartbeat", dependencies=auth)
    def heartbeat(lease: Lease[SessionState] = any_lease) -> dict[str, float]:
        return {"remaining_seconds": registry.remaining(lease)}

    @app.get("/lease_status", dependencies=auth)
    def lease_status(
        x_lease_token: str | None = Header(default=None, alias=LEASE_HEADER),
    ) -> dict[str, float]:
        lease = registry.get(x_lease_token, touch=False)
        return {
            "remaining_seconds": registry.remaining(lease),
            "idle_timeout_seconds": registry.idle_timeout,
        }

    # ------------------------------------------------------------- protocol: the session

    def timing_header(timings: dict[str, float]) -> dict[str, str]:
        """``Server-Timing`` (milliseconds per step; browsers' dev tools show it)."""
        if not timings:
            return {}
        return {"Server-Timing": ", ".join(f"{k};dur={1000 * v:.2f}" for k, v in timings.items())}

    def protocol_call(lease: Lease[SessionState], fn: Callable[[Any], Reply]) -> Response:
        """Run a predicting call under the lease lock and encode its changed box."""

        def work(s: ProtocolSession) -> Response:
            s.timings = {}
            reply = fn(s)
            t0 = time.perf_counter()
            meta: dict[str, Any] = {"ran_prediction": bool(reply.ran), "bbox": None}
            body = b""
            if reply.change is not None:
                values = reply.change.values
                meta.update(
                    bbox=reply.change.box, dtype=str(values.dtype), shape=list(values.shape)
                )
                body = encode_array(values)
            timings = dict(s.timings, encode=time.perf_counter() - t0)
            headers = {META_HEADER: json.dumps(meta), **timing_header(timings)}
            return Response(body, media_type=OCTET, headers=headers)

        return run_locked(lease, work)

    @app.post("/set_image", dependencies=auth)
    async def set_image(request: Request, lease: Lease[SessionState] = protocol_lease) -> Response:
        meta = parse_meta(request)
        props = meta.get("image_properties") or {}
        if not isinstance(props, dict):
            raise HTTPException(400, "image_properties must be a JSON object")
        body = await read_body(request, cfg.max_upload_bytes)

        def work() -> JSONResponse:
            t0 = time.perf_counter()
            image = decode_array(body, max_bytes=cfg.max_upload_bytes)
            t1 = time.perf_counter()
            shape = run_locked(lease, lambda s: s.set_image(image, props))
            timings = {"decode": t1 - t0, "set_image": time.perf_counter() - t1}
            return JSONResponse({"original_image_shape": shape}, headers=timing_header(timings))

        return await run_in_threadpool(work)

    @app.post("/set_target_buffer", dependencies=auth)
    async def set_target_buffer(request: Request, lease: Lease[SessionState] = protocol_lease):
        payload = await read_json(request)
        shape = field(payload, "shape", list)
        dtype = field(payload, "dtype", str)
        await run_in_threadpool(run_locked, lease, lambda s: s.set_target_buffer(shape, dtype))
        return {}

    @app.post("/set_do_autozoom", dependencies=auth)
    async def set_do_autozoom(request: Request, lease: Lease[SessionState] = protocol_lease):
        payload = await read_json(request)
        value = field(payload, "do_autozoom", (bool, int))
        await run_in_threadpool(run_locked, lease, lambda s: s.set_do_autozoom(bool(value)))
        return {}

    @app.post("/reset_interactions", dependencies=auth)
    async def reset_interactions(lease: Lease[SessionState] = protocol_lease) -> dict:
        await run_in_threadpool(run_locked, lease, lambda s: s.reset_interactions())
        return {}

    @app.post("/add_point_interaction", dependencies=auth)
    async def add_point(request: Request, lease: Lease[SessionState] = protocol_lease):
        payload = await read_json(request)
        coords = field(payload, "coordinates", list)
        positive = bool(field(payload, "include_interaction", (bool, int)))
        run = flag(payload, "run_prediction", True)
        return await run_in_threadpool(
            protocol_call, lease, lambda s: s.add_point(coords, positive, run)
        )

    @app.post("/predict", dependencies=auth)
    async def predict(lease: Lease[SessionState] = protocol_lease) -> Response:
        return await run_in_threadpool(protocol_call, lease, lambda s: s.predict())

    @app.post("/undo", dependencies=auth)
    async def undo(lease: Lease[SessionState] = protocol_lease) -> Response:
        return await run_in_threadpool(protocol_call, lease, lambda s: s.undo())

    def unsupported(name: str) -> Callable[..., Any]:
        def handler(lease: Lease[SessionState] = protocol_lease) -> None:
            raise HTTPException(
                400,
                f"{name} interactions are not supported by SAM-Med3D on this server; use "
                "points (positive and negative clicks)",
            )

        return handler

    for path, name in (
        ("/add_bbox_interaction", "bounding-box"),
        ("/add_scribble_interaction", "scribble"),
        ("/add_lasso_interaction", "lasso"),
        ("/add_initial_seg_interaction", "initial-segmentation"),
    ):
        app.post(path, dependencies=auth)(unsupported(name))

    # ------------------------------------------------------------------------- web page

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(str(static_dir() / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(static_dir())), name="static")

    @app.get("/api/web/config", dependencies=auth)
    def web_config() -> dict[str, Any]:
        from sammed3d import __version__

        return {
            "version": __version__,
            "model": cfg.model_name,
            "license": cfg.weights_license,
            "volumes": [p.name for p in cfg.volumes],
            "max_upload_mb": cfg.max_upload_bytes / 2**20,
            "liveness_timeout_seconds": registry.liveness_timeout,
        }

    @app.post("/api/web/claim", dependencies=auth)
    def web_claim() -> dict[str, Any]:
        return claim_body(registry.claim(KIND_WEB))

    def web_patch(change: Patch | None, extra: dict[str, Any]) -> Response:
        meta = dict(extra)
        body = b""
        if change is not None:
            meta["bbox"] = change.box
            body = np.asarray(change.values, dtype=np.uint8).tobytes(order="F")
        else:
            meta["bbox"] = None
        return Response(body, media_type=OCTET, headers={META_HEADER: json.dumps(meta)})

    @app.post("/api/web/open", dependencies=auth)
    async def web_open(request: Request, lease: Lease[SessionState] = web_lease) -> dict:
        payload = await read_json(request)
        index = field(payload, "index", int)
        if not 0 <= index < len(cfg.volumes):
            raise HTTPException(400, f"no start-up volume {index}; there are {len(cfg.volumes)}")
        path = cfg.volumes[index]
        return await run_in_threadpool(run_locked, lease, lambda s: s.open_path(path))

    @app.post("/api/web/upload", dependencies=auth)
    async def web_upload(
        request: Request, filename: str, lease: Lease[SessionState] = web_lease
    ) -> dict:
        body = await read_body(request, cfg.max_upload_bytes)
        if not body:
            raise HTTPException(400, "empty upload")
        return await run_in_threadpool(
            run_locked, lease, lambda s: s.open_bytes(bytes(body), filename)
        )

    @app.get("/api/web/image.nii.gz", dependencies=auth)
    async def web_image(lease: Lease[SessionState] = web_lease) -> Response:
        data = await run_in_threadpool(run_locked, lease, lambda s: s.image_nifti())
        return Response(data, media_type=OCTET)

    @app.get("/api/web/overlay.nii.gz", dependencies=auth)
    async def web_overlay(lease: Lease[SessionState] = web_lease) -> Response:
        data = await run_in_threadpool(run_locked, lease, lambda s: s.overlay_nifti())
        return Response(data, media_type=OCTET)

    @app.get("/api/web/labels.nii.gz", dependencies=auth)
    async def web_labels(lease: Lease[SessionState] = web_lease) -> Response:
        def work(s: WebSession) -> tuple[bytes, str]:
            stem = (s.name or "image").split(".")[0] or "image"
            return s.label_map_nifti(), f"{stem}_labels.nii.gz"

        data, name = await run_in_threadpool(run_locked, lease, work)
        return Response(
            data,
            media_type=OCTET,
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @app.post("/api/web/click", dependencies=auth)
    async def web_click(request: Request, lease: Lease[SessionState] = web_lease) -> Response:
        payload = await read_json(request)
        mm = field(payload, "mm", list)
        positive = flag(payload, "positive", True)

        def work(s: WebSession) -> Response:
            result = s.click(mm, positive)
            value = float(s.volume.array[result.voxel])
            extra = {"voxel": list(result.voxel), "value": value, "info": s.info()}
            return web_patch(result.change, extra)

        return await run_in_threadpool(run_locked, lease, work)

    @app.post("/api/web/undo", dependencies=auth)
    async def web_undo(lease: Lease[SessionState] = web_lease) -> Response:
        return await run_in_threadpool(
            run_locked, lease, lambda s: web_patch(s.undo(), {"info": s.info()})
        )

    @app.post("/api/web/redo", dependencies=auth)
    async def web_redo(lease: Lease[SessionState] = web_lease) -> Response:
        return await run_in_threadpool(
            run_locked, lease, lambda s: web_patch(s.redo(), {"info": s.info()})
        )

    @app.post("/api/web/new_object", dependencies=auth)
    async def web_new_object(lease: Lease[SessionState] = web_lease) -> dict:
        def work(s: WebSession) -> dict[str, Any]:
            s.new_object()
            return s.info()

        return await run_in_threadpool(run_locked, lease, work)

    @app.post("/api/web/select_object", dependencies=auth)
    async def web_select(request: Request, lease: Lease[SessionState] = web_lease) -> dict:
        payload = await read_json(request)
        label = field(payload, "label", int)

        def work(s: WebSession) -> dict[str, Any]:
            s.select_object(label)
            return s.info()

        return await run_in_threadpool(run_locked, lease, work)

    app.state.settings = asdict(cfg) | {"api_key": "***" if cfg.api_key else None}
    return app
