"""Routes of the web page: ``/``, ``/static/...`` and its API under ``/api/web/``, a thin
layer over :class:`~sammed3d.serve.web.WebSession`.

Label-map changes travel as a binary body (the changed box, uint8, x fastest, i.e. NIfTI's
voxel order) with ``X-Meta: {"bbox": [[lo, hi] x 3] | null, "info": {...}, ...}``.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from sammed3d.data.dataset_json import KNOWN_MODALITIES
from sammed3d.serve.context import KIND_WEB, Context, SessionState
from sammed3d.serve.http import META_HEADER, OCTET, field, flag, read_body, read_json
from sammed3d.serve.leases import Lease
from sammed3d.serve.patch import Patch
from sammed3d.serve.web import WebSession, check_web_modality, parse_mm


def static_dir() -> Any:
    """The packaged web assets (``index.html``, ``app.js``, ``vendor/niivue.umd.js``...)."""
    return resources.files("sammed3d.serve") / "static"


def patch_response(change: Patch | None, extra: dict[str, Any]) -> Response:
    """A label-map change as the page reads it."""
    meta = dict(extra, bbox=None if change is None else change.box)
    body = b"" if change is None else np.asarray(change.values, np.uint8).tobytes(order="F")
    return Response(body, media_type=OCTET, headers={META_HEADER: json.dumps(meta)})


def register(app: FastAPI, ctx: Context) -> None:
    """Add the page and its API to ``app``."""
    cfg, registry, auth, lease_dep = ctx.config, ctx.registry, ctx.auth, ctx.web_lease
    run = ctx.run_locked

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
            "modality": cfg.modality,  # the server's default (--modality), or null
            "modalities": list(KNOWN_MODALITIES),  # what the page may choose
        }

    @app.post("/api/web/claim", dependencies=auth)
    def web_claim() -> dict[str, Any]:
        return ctx.claim_body(registry.claim(KIND_WEB))

    @app.post("/api/web/heartbeat", dependencies=auth)
    def web_heartbeat(lease: Lease[SessionState] = lease_dep) -> dict[str, float]:
        # /heartbeat with the page's wording when the session is gone
        return {"remaining_seconds": registry.remaining(lease)}

    @app.post("/api/web/open", dependencies=auth)
    async def web_open(request: Request, lease: Lease[SessionState] = lease_dep) -> dict:
        payload = await read_json(request)  # {"index": n, "modality": "CT" | "" | null}
        index = field(payload, "index", int)
        if not 0 <= index < len(cfg.volumes):
            raise HTTPException(400, f"no start-up volume {index}; there are {len(cfg.volumes)}")
        modality = check_web_modality(payload.get("modality"))
        path = cfg.volumes[index]
        return await run_in_threadpool(run, lease, lambda s: s.open_path(path, modality=modality))

    @app.post("/api/web/upload", dependencies=auth)
    async def web_upload(
        request: Request,
        filename: str,
        modality: str | None = None,
        lease: Lease[SessionState] = lease_dep,
    ) -> dict:
        chosen = check_web_modality(modality)  # before the body is read
        with lease.working():  # a long upload is activity: the session is not reaped
            body = await read_body(request, cfg.max_upload_bytes)
            if not body:
                raise HTTPException(400, "empty upload")
            return await run_in_threadpool(
                run, lease, lambda s: s.open_bytes(bytes(body), filename, modality=chosen)
            )

    @app.get("/api/web/image.nii.gz", dependencies=auth)
    async def web_image(lease: Lease[SessionState] = lease_dep) -> Response:
        data = await run_in_threadpool(run, lease, lambda s: s.image_nifti())
        return Response(data, media_type=OCTET)

    @app.get("/api/web/overlay.nii.gz", dependencies=auth)
    async def web_overlay(lease: Lease[SessionState] = lease_dep) -> Response:
        data = await run_in_threadpool(run, lease, lambda s: s.overlay_nifti())
        return Response(data, media_type=OCTET)

    @app.get("/api/web/labels.nii.gz", dependencies=auth)
    async def web_labels(lease: Lease[SessionState] = lease_dep) -> Response:
        def work(s: WebSession) -> tuple[bytes, str]:
            stem = (s.name or "image").split(".")[0] or "image"
            return s.label_map_nifti(), f"{stem}_labels.nii.gz"

        data, name = await run_in_threadpool(run, lease, work)
        disposition = {"Content-Disposition": f'attachment; filename="{name}"'}
        return Response(data, media_type=OCTET, headers=disposition)

    @app.post("/api/web/click", dependencies=auth)
    async def web_click(request: Request, lease: Lease[SessionState] = lease_dep) -> Response:
        payload = await read_json(request)
        if "mm" not in payload:
            raise HTTPException(400, "missing required field: mm")
        mm = parse_mm(payload["mm"])  # three numbers, else a one-line 400 saying so
        positive = flag(payload, "positive", True)

        def work(s: WebSession) -> Response:
            result = s.click(mm, positive)
            value = float(s.volume.array[result.voxel])
            extra = {
                "voxel": list(result.voxel),
                "value": value,
                "info": s.info(),
                "note": s.session.rule_note,  # what a rule did at this click, or None
                "rule": s.session.rule,  # that rule's name, or None
            }
            return patch_response(result.change, extra)

        return await run_in_threadpool(run, lease, work)

    @app.post("/api/web/extent", dependencies=auth)
    async def web_extent(request: Request, lease: Lease[SessionState] = lease_dep) -> Response:
        payload = await read_json(request)  # {} (next larger), {"step": -1}, {"index": n}
        index = field(payload, "index", int) if "index" in payload else None
        step = field(payload, "step", int) if "step" in payload else 1
        if step == 0:
            raise HTTPException(400, "field step must not be 0")

        def work(s: WebSession) -> Response:
            extent, found, change = s.change_extent(step, index)
            extra = {
                "extent": {
                    "index": extent.index,
                    "count": len(found),
                    "volume_ml": extent.volume_ml,
                    "spacing_mm": extent.spacing_mm,
                    "picked": extent.picked,
                    "picked_index": next((e.index for e in found if e.picked), None),
                    "model_index": next((e.index for e in found if e.model_pick), None),
                },
                "info": s.info(),
            }
            return patch_response(change, extra)

        return await run_in_threadpool(run, lease, work)

    @app.post("/api/web/undo", dependencies=auth)
    async def web_undo(lease: Lease[SessionState] = lease_dep) -> Response:
        return await run_in_threadpool(
            run, lease, lambda s: patch_response(s.undo(), {"info": s.info()})
        )

    @app.post("/api/web/redo", dependencies=auth)
    async def web_redo(lease: Lease[SessionState] = lease_dep) -> Response:
        return await run_in_threadpool(
            run, lease, lambda s: patch_response(s.redo(), {"info": s.info()})
        )

    @app.post("/api/web/new_object", dependencies=auth)
    async def web_new_object(lease: Lease[SessionState] = lease_dep) -> dict:
        def work(s: WebSession) -> dict[str, Any]:
            s.new_object()
            return s.info()

        return await run_in_threadpool(run, lease, work)

    @app.post("/api/web/select_object", dependencies=auth)
    async def web_select(request: Request, lease: Lease[SessionState] = lease_dep) -> dict:
        label = field(await read_json(request), "label", int)

        def work(s: WebSession) -> dict[str, Any]:
            s.select_object(label)
            return s.info()

        return await run_in_threadpool(run, lease, work)
