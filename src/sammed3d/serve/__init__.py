"""``sammed3d serve``: SAM-Med3D behind the nnInteractive v2 HTTP protocol, plus a web page.

* :mod:`sammed3d.serve.app`: the FastAPI application (:func:`create_app`), its routes in
  :mod:`~sammed3d.serve.routes_protocol` and :mod:`~sammed3d.serve.routes_web`, HTTP
  plumbing in :mod:`~sammed3d.serve.http`.
* :mod:`sammed3d.serve.protocol`: one ``nninteractive-client`` session
  (3D Slicer's SlicerNNInteractive, napari-nninteractive) on an InteractiveSession.
* :mod:`sammed3d.serve.web`: one web page's session (NiiVue, clicks in millimetres).
* :mod:`sammed3d.serve.wire`: the "NNIA" compressed array format.
* :mod:`sammed3d.serve.orientation`: the geometry assumed for protocol images.
* :mod:`sammed3d.serve.leases`: lease tokens, idle and liveness time-outs.
* :mod:`sammed3d.serve.patch`: changed-box replies.

FastAPI, uvicorn and blosc2 are imported only by the modules that need them, never by
``import sammed3d`` or ``sammed3d --help``. See docs/serve.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sammed3d.serve.app import create_app
    from sammed3d.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from sammed3d.serve.app import create_app

        return create_app
    if name == "ServeConfig":
        from sammed3d.serve.config import ServeConfig

        return ServeConfig
    raise AttributeError(f"module 'sammed3d.serve' has no attribute {name!r}")
