"""Routes of the nnInteractive v2 protocol (the paths of ``nnInteractive.inference.remote``).

Leases (``/claim``, ``/heartbeat``, ``/lease_status``, ``/release``), ``/healthz``,
``/capabilities`` and the session calls, each a thin layer over
:class:`~sammed3d.serve.protocol.ProtocolSession`. Bounding boxes, scribbles, lassos and
initial segmentations answer 400: SAM-Med3D takes points.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from sammed3d.serve.context import KIND_PROTOCOL, Context, SessionState
from sammed3d.serve.http import (
    LEASE_HEADER,
    META_HEADER,
    OCTET,
    field,
    flag,
    parse_meta,
    read_body,
    read_json,
    timing_header,
)
from sammed3d.serve.leases import Lease
from sammed3d.serve.protocol import ProtocolSession, Reply
from sammed3d.serve.wire import decode_array, encode_array

UNSUPPORTED = {
    "/add_bbox_interaction": "bounding-box",
    "/add_scribble_interaction": "scribble",
    "/add_lasso_interaction": "lasso",
    "/add_initial_seg_interaction": "initial-segmentation",
}


def capabilities(ctx: Context, patch_size: int, do_autozoom: bool) -> dict[str, Any]:
    """``GET /capabilities``: every field the client reads, plus the server's own."""
    from sammed3d import __version__

    cfg = ctx.config
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
        "patch_size": [patch_size] * 3,
        "do_autozoom": do_autozoom,
        "inference_session_version": __version__,
        "license": cfg.weights_license,
        "supports_undo": True,
        "server": "sammed3d",
        "model": cfg.model_name,
        "orientation": cfg.orientation,
    }


def register(app: FastAPI, ctx: Context, *, patch_size: int, do_autozoom: bool) -> None:
    """Add the protocol routes to ``app``."""
    cfg, registry, auth = ctx.config, ctx.registry, ctx.auth
    caps = capabilities(ctx, patch_size, do_autozoom)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/capabilities", dependencies=auth)
    def get_capabilities() -> dict[str, Any]:
        return caps

    @app.post("/claim", dependencies=auth)
    def claim() -> dict[str, Any]:
        return ctx.claim_body(registry.claim(KIND_PROTOCOL))

    @app.post("/release", dependencies=auth)
    def release(x_lease_token: str | None = Header(default=None, alias=LEASE_HEADER)) -> dict:
        registry.release(x_lease_token)
        return {"released": True}  # idempotent

    @app.post("/heartbeat", dependencies=auth)
    def heartbeat(lease: Lease[SessionState] = ctx.any_lease) -> dict[str, float]:
        return {"remaining_seconds": registry.remaining(lease)}

    @app.get("/lease_status", dependencies=auth)
    def lease_status(
        x_lease_token: str | None = Header(default=None, alias=LEASE_HEADER),
    ) -> dict[str, float]:
        lease = registry.get(x_lease_token, touch=False)  # a probe: not a sign of life
        return {
            "remaining_seconds": registry.remaining(lease),
            "idle_timeout_seconds": registry.idle_timeout,
        }

    def call(lease: Lease[SessionState], fn: Callable[[ProtocolSession], Reply]) -> Response:
        """A predicting call under the lease lock; its changed box as the reply."""

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

        return ctx.run_locked(lease, work)

    lease_dep = ctx.protocol_lease

    @app.post("/set_image", dependencies=auth)
    async def set_image(request: Request, lease: Lease[SessionState] = lease_dep) -> Response:
        props = parse_meta(request).get("image_properties") or {}
        if not isinstance(props, dict):
            raise HTTPException(400, "image_properties must be a JSON object")
        body = await read_body(request, cfg.max_upload_bytes)

        def work() -> JSONResponse:  # decoding and checks off the event loop
            t0 = time.perf_counter()
            image = decode_array(body, max_bytes=cfg.max_upload_bytes)
            t1 = time.perf_counter()
            shape = ctx.run_locked(lease, lambda s: s.set_image(image, props))
            timings = {"decode": t1 - t0, "set_image": time.perf_counter() - t1}
            return JSONResponse({"original_image_shape": shape}, headers=timing_header(timings))

        return await run_in_threadpool(work)

    @app.post("/set_target_buffer", dependencies=auth)
    async def set_target_buffer(request: Request, lease: Lease[SessionState] = lease_dep):
        payload = await read_json(request)
        shape = field(payload, "shape", list)
        dtype = field(payload, "dtype", str)
        await run_in_threadpool(ctx.run_locked, lease, lambda s: s.set_target_buffer(shape, dtype))
        return {}

    @app.post("/set_do_autozoom", dependencies=auth)
    async def set_do_autozoom(request: Request, lease: Lease[SessionState] = lease_dep):
        value = bool(field(await read_json(request), "do_autozoom", (bool, int)))
        await run_in_threadpool(ctx.run_locked, lease, lambda s: s.set_do_autozoom(value))
        return {}

    @app.post("/reset_interactions", dependencies=auth)
    async def reset_interactions(lease: Lease[SessionState] = lease_dep) -> dict:
        await run_in_threadpool(ctx.run_locked, lease, lambda s: s.reset_interactions())
        return {}

    @app.post("/add_point_interaction", dependencies=auth)
    async def add_point(request: Request, lease: Lease[SessionState] = lease_dep) -> Response:
        payload = await read_json(request)
        coords = field(payload, "coordinates", list)
        positive = bool(field(payload, "include_interaction", (bool, int)))
        run = flag(payload, "run_prediction", True)
        return await run_in_threadpool(call, lease, lambda s: s.add_point(coords, positive, run))

    @app.post("/predict", dependencies=auth)
    async def predict(lease: Lease[SessionState] = lease_dep) -> Response:
        return await run_in_threadpool(call, lease, lambda s: s.predict())

    @app.post("/undo", dependencies=auth)
    async def undo(lease: Lease[SessionState] = lease_dep) -> Response:
        return await run_in_threadpool(call, lease, lambda s: s.undo())

    def unsupported(name: str) -> Callable[..., Any]:
        def handler(lease: Lease[SessionState] = lease_dep) -> None:
            raise HTTPException(
                400,
                f"{name} interactions are not supported by SAM-Med3D on this server; use "
                "points (positive and negative clicks)",
            )

        return handler

    for path, name in UNSUPPORTED.items():
        app.post(path, dependencies=auth)(unsupported(name))
