"""The FastAPI application of ``sammed3d serve``: nnInteractive v2 protocol + web page.

* :mod:`sammed3d.serve.routes_protocol`: ``/claim``, ``/release``, ``/heartbeat``,
  ``/lease_status``, ``/healthz``, ``/capabilities``, ``/set_image`` (NNIA body + ``X-Meta``),
  ``/set_target_buffer``, ``/set_do_autozoom``, ``/reset_interactions``,
  ``/add_point_interaction``, ``/predict``, ``/undo``; boxes, scribbles, lassos and initial
  segmentations answer 400 (points only).
* :mod:`sammed3d.serve.routes_web`: ``/``, ``/static/...`` and ``/api/web/...``.

All but ``/healthz``, ``/`` and ``/static/*`` need the API key when one is set. Errors are
JSON ``{"detail": "<one line>"}`` (:mod:`sammed3d.serve.http`): 400 bad input, 401 API key,
404, 410 lease gone, 413 too large, 503 full (with ``Retry-After``); a bug is a 500 with a
one-line detail, logged with its traceback, and the server keeps serving.

Concurrency: each lease has a lock (a client's requests run one at a time); the model runs
under one lock shared by every session; uploads are read and decoded off the event loop, so
heartbeats stay answered during a long upload. A background task frees idle and silent
sessions every ``sweep_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException
from starlette.concurrency import run_in_threadpool

from sammed3d.inference.predictor import SamMed3DPredictor
from sammed3d.serve import routes_protocol, routes_web
from sammed3d.serve.config import ServeConfig
from sammed3d.serve.context import KIND_PROTOCOL, KIND_WEB, Context, SessionState
from sammed3d.serve.http import LEASE_HEADER, install_error_handlers, install_host_check
from sammed3d.serve.leases import Lease, LeaseGone, LeaseRegistry
from sammed3d.serve.protocol import ProtocolSession
from sammed3d.serve.routes_web import static_dir
from sammed3d.serve.web import WebSession

logger = logging.getLogger(__name__)

__all__ = ["create_app", "static_dir", "web_gone_message"]


def web_gone_message(exc: LeaseGone) -> str:
    """The web page's 410 line: why its session ended, and to reload."""
    gone = exc.gone
    if gone is None:  # unknown token: reaped long ago, or the server restarted
        return f"this page's session is gone ({str(exc).split(';')[0]}): reload the page"
    ended = "was released" if gone.why == "released" else "expired"
    who = "the page" if gone.kind == KIND_WEB else "its client"
    return f"this session {ended}: {gone.reason(who)}; reload the page"


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

    def make_state(kind: str) -> SessionState:
        predictor = make_predictor()
        if kind == KIND_WEB:
            return WebSession(
                predictor,
                compute_lock=compute_lock,
                modality=cfg.modality,
                max_image_bytes=cfg.max_upload_bytes,
                irregular_slices=cfg.irregular_slices,
            )
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
    install_error_handlers(app)
    if cfg.allowed_hosts is not None:
        install_host_check(app, cfg.allowed_hosts)

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

    def lease_of(kind: str | None) -> Any:
        def dependency(
            x_lease_token: str | None = Header(default=None, alias=LEASE_HEADER),
        ) -> Lease[SessionState]:
            if kind != KIND_WEB:
                return registry.get(x_lease_token, kind=kind)
            try:
                return registry.get(x_lease_token, kind=kind)
            except LeaseGone as exc:  # in the page's words: it shows this line as it is
                raise LeaseGone(web_gone_message(exc), exc.gone) from None

        return Depends(dependency)

    ctx = Context(
        config=cfg,
        registry=registry,
        auth=[Depends(require_auth)],
        protocol_lease=lease_of(KIND_PROTOCOL),
        web_lease=lease_of(KIND_WEB),
        any_lease=lease_of(None),
    )
    probe = make_predictor()  # what every session will get: ROI size, extension default
    routes_protocol.register(
        app, ctx, patch_size=int(probe.roi_size), do_autozoom=bool(probe.extend)
    )
    del probe
    routes_web.register(app, ctx)
    return app
