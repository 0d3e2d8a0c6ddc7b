"""Leases: one server-side session per client, found by a token, freed when idle or dead.

This is the lease model of the nnInteractive server (``POST /claim`` hands out a token that
rides in ``X-Lease-Token``). Two clocks per lease:

* ``last_active``: real user actions (image, clicks, undo...). Idle longer than
  ``idle_timeout`` s -> reaped.
* ``last_seen``: any request, heartbeats included. Silent longer than ``liveness_timeout``
  s (a crashed client) -> reaped.

A lease with a request in progress (:meth:`Lease.working`: an upload still arriving, an
image being decoded) is never reaped; both clocks restart when the request ends.

A reaped or released lease's state is closed (its image and embeddings are dropped) and
its token answers 410 Gone from then on, saying why (:class:`Gone`) for the most recent
:data:`GONE_MEMORY` tokens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Reaped or released tokens whose reason is kept (the oldest are forgotten first).
GONE_MEMORY = 1024


@dataclass(frozen=True)
class Gone:
    """Why a lease ended.

    Args:
        kind: The lease's kind (``"web"``, ``"nninteractive"``).
        why: ``"silent"`` (no request for ``limit`` s), ``"idle"`` (no user action for
            ``limit`` s) or ``"released"``.
        seconds: How long it had been silent or idle when it was reaped.
        limit: The time-out it ran into (s).
    """

    kind: str
    why: str
    seconds: float = 0.0
    limit: float = 0.0

    def reason(self, who: str = "the client") -> str:
        """The reason in words, e.g. ``no request from the page for 75 s (...)``."""
        if self.why == "silent":
            return (
                f"no request from {who} for {self.seconds:.0f} s (the server frees a session "
                f"after {self.limit:g} s without one, --liveness-timeout)"
            )
        if self.why == "idle":
            return (
                f"no user action for {self.seconds:.0f} s (the server frees a session after "
                f"{self.limit:g} s without one, --idle-timeout)"
            )
        return f"{who} released it"


class LeaseGone(LookupError):
    """The token is missing, unknown, released or reaped (HTTP 410).

    Args:
        message: The one-line message.
        gone: Why the lease ended, when the token was one of the server's (else None).
    """

    def __init__(self, message: str, gone: Gone | None = None) -> None:
        super().__init__(message)
        self.gone = gone


class ServerFull(RuntimeError):
    """Every session slot is taken (HTTP 503 with Retry-After)."""


@dataclass(eq=False)
class Lease(Generic[T]):
    """One client's session and its bookkeeping (``lock`` serialises its requests)."""

    token: str
    kind: str
    state: T
    lock: threading.Lock = field(default_factory=threading.Lock)
    created: float = field(default_factory=time.monotonic)
    last_active: float = 0.0
    last_seen: float = 0.0
    #: Requests in progress on this lease (:meth:`working`); a busy lease is not reaped.
    busy: int = 0
    _busy_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.last_active = self.last_seen = self.created

    def mark_seen(self) -> None:
        self.last_seen = time.monotonic()

    def mark_active(self) -> None:
        self.last_active = self.last_seen = time.monotonic()

    @contextmanager
    def working(self) -> Iterator[None]:
        """A user action in progress (an upload arriving, an image decoding, a click): the
        lease is not reaped meanwhile, and its clocks restart when the action ends."""
        with self._busy_lock:
            self.busy += 1
        self.mark_active()
        try:
            yield
        finally:
            self.mark_active()
            with self._busy_lock:
                self.busy -= 1


class LeaseRegistry(Generic[T]):
    """Thread-safe table of leases.

    Args:
        factory: Makes the state of a new lease from its kind (e.g. ``"nninteractive"``,
            ``"web"``).
        max_sessions: Leases held at once (all kinds together).
        idle_timeout: Seconds without a user action before a lease is reaped.
        liveness_timeout: Seconds without any request before a lease is reaped.
        close: Frees a lease's state (called once, outside the registry lock).
    """

    def __init__(
        self,
        factory: Callable[[str], T],
        *,
        max_sessions: int,
        idle_timeout: float,
        liveness_timeout: float,
        close: Callable[[T], None] = lambda state: None,
    ) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        if idle_timeout <= 0 or liveness_timeout <= 0:
            raise ValueError("time-outs must be positive")
        self._factory = factory
        self._close = close
        self.max_sessions = int(max_sessions)
        self.idle_timeout = float(idle_timeout)
        self.liveness_timeout = float(liveness_timeout)
        self._leases: dict[str, Lease[T]] = {}
        self._gone: OrderedDict[str, Gone] = OrderedDict()
        self._mu = threading.Lock()

    def __len__(self) -> int:
        with self._mu:
            return len(self._leases)

    def claim(self, kind: str) -> Lease[T]:
        """A new lease (raises :class:`ServerFull` at the cap)."""
        with self._mu:
            if len(self._leases) >= self.max_sessions:
                raise ServerFull(
                    f"server is at capacity ({self.max_sessions} sessions); retry later"
                )
            lease = Lease(secrets.token_hex(16), kind, self._factory(kind))
            self._leases[lease.token] = lease
            count = len(self._leases)
        logger.info(
            "claimed %s session %s... (%d/%d)", kind, lease.token[:8], count, self.max_sessions
        )
        return lease

    def get(self, token: str | None, *, kind: str | None = None, touch: bool = True) -> Lease[T]:
        """The lease of ``token``; ``touch`` marks it seen (liveness, not activity).

        Raises:
            LeaseGone: no token, an unknown or expired one, or one of another ``kind``.
        """
        if not token:
            raise LeaseGone(
                "lease token missing: claim a session with POST /claim and send its token in "
                "X-Lease-Token"
            )
        with self._mu:
            lease = self._leases.get(token)
            gone = self._gone.get(token)
        if lease is None:
            if gone is None:
                raise LeaseGone("lease expired or unknown; claim a new session with POST /claim")
            ended = "released" if gone.why == "released" else "expired"
            raise LeaseGone(
                f"lease {ended}: {gone.reason()}; claim a new session with POST /claim", gone
            )
        if kind is not None and lease.kind != kind:
            raise LeaseGone(f"this lease belongs to a {lease.kind} session, not a {kind} one")
        if touch:
            lease.mark_seen()
        return lease

    def release(self, token: str | None) -> bool:
        """Free a lease now; False if there was none (idempotent)."""
        if not token:
            return False
        with self._mu:
            lease = self._leases.pop(token, None)
            count = len(self._leases)
            if lease is not None:
                self._remember(token, Gone(lease.kind, "released"))
        if lease is None:
            return False
        self._free(lease)
        logger.info("released session %s... (%d/%d)", token[:8], count, self.max_sessions)
        return True

    def sweep(self, now: float | None = None) -> list[str]:
        """Reap idle and dead leases; returns their tokens."""
        now = time.monotonic() if now is None else now
        reaped: list[tuple[Lease[T], str]] = []
        with self._mu:
            for token, lease in list(self._leases.items()):
                if lease.busy > 0:  # a request is still running on it
                    continue
                if now - lease.last_seen > self.liveness_timeout:
                    why = "dead (no request)"
                    gone = Gone(lease.kind, "silent", now - lease.last_seen, self.liveness_timeout)
                elif now - lease.last_active > self.idle_timeout:
                    why = "idle"
                    gone = Gone(lease.kind, "idle", now - lease.last_active, self.idle_timeout)
                else:
                    continue
                del self._leases[token]
                self._remember(token, gone)
                reaped.append((lease, why))
        for lease, why in reaped:
            self._free(lease)
            logger.info("reaped %s session %s...", why, lease.token[:8])
        return [lease.token for lease, _ in reaped]

    def _remember(self, token: str, gone: Gone) -> None:
        """Keep why ``token`` ended (caller holds ``_mu``)."""
        self._gone[token] = gone
        while len(self._gone) > GONE_MEMORY:
            self._gone.popitem(last=False)

    def remaining(self, lease: Lease[T]) -> float:
        """Seconds until the idle time-out of ``lease``."""
        return max(0.0, self.idle_timeout - (time.monotonic() - lease.last_active))

    def close_all(self) -> None:
        with self._mu:
            leases = list(self._leases.values())
            self._leases.clear()
        for lease in leases:
            self._free(lease)

    def _free(self, lease: Lease[T]) -> None:
        # wait for a request still running on this lease before freeing its state
        with lease.lock:
            try:
                self._close(lease.state)
            except Exception:  # cleanup must never stop a sweep or a shutdown
                logger.exception("error closing session %s...", lease.token[:8])
        release_memory()


def release_memory() -> None:
    """Collect garbage and hand freed heap memory back to the OS (glibc ``malloc_trim``).

    Without the trim, glibc keeps freed blocks of up to 32 MiB (masks, ROI crops) in its
    arenas, so the server's RSS would not go down when a session ends.
    """
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


_TRIM: list = []


def _malloc_trim():  # noqa: ANN202 - a ctypes function or None
    if not _TRIM:
        name = ctypes.util.find_library("c")
        try:
            func = ctypes.CDLL(name).malloc_trim if name else None
        except (OSError, AttributeError):  # not glibc (macOS, musl...)
            func = None
        _TRIM.append(func)
    return _TRIM[0]
