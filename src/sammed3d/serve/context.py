"""What the route modules share: settings, the lease table and the FastAPI dependencies."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sammed3d.serve.config import ServeConfig
from sammed3d.serve.leases import Lease, LeaseRegistry
from sammed3d.serve.protocol import ProtocolSession
from sammed3d.serve.web import WebSession

SessionState = ProtocolSession | WebSession
KIND_PROTOCOL = "nninteractive"
KIND_WEB = "web"


@dataclass(frozen=True)
class Context:
    """Built once by :func:`sammed3d.serve.app.create_app`.

    Args:
        config: The settings.
        registry: The lease table (both kinds of session).
        auth: ``dependencies=`` for routes that need the API key.
        protocol_lease, web_lease, any_lease: Dependencies that resolve ``X-Lease-Token``
            to a lease of that kind (410 otherwise).
    """

    config: ServeConfig
    registry: LeaseRegistry[SessionState]
    auth: list[Any]
    protocol_lease: Any
    web_lease: Any
    any_lease: Any

    @staticmethod
    def run_locked(lease: Lease[SessionState], fn: Callable[[Any], Any]) -> Any:
        """``fn(state)`` under the lease's lock, counted as a user action (the lease is not
        reaped while it runs: :meth:`Lease.working`)."""
        with lease.working(), lease.lock:
            return fn(lease.state)

    def claim_body(self, lease: Lease[SessionState]) -> dict[str, Any]:
        """The reply to ``/claim`` (what ``nninteractive-client`` reads)."""
        return {
            "lease_token": lease.token,
            "idle_timeout_seconds": self.registry.idle_timeout,
            "liveness_timeout_seconds": self.registry.liveness_timeout,
            "max_sessions": self.registry.max_sessions,
        }
