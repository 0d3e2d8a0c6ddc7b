"""Lease table: claim, capacity, kinds, release, idle and liveness reaping."""

from __future__ import annotations

import time

import pytest

from sammed3d.serve.leases import LeaseGone, LeaseRegistry, ServerFull


def _registry(closed: list) -> LeaseRegistry:
    return LeaseRegistry(
        lambda kind: {"kind": kind},
        max_sessions=2,
        idle_timeout=100.0,
        liveness_timeout=10.0,
        close=closed.append,
    )


def test_claim_get_release() -> None:
    closed: list = []
    reg = _registry(closed)
    a = reg.claim("web")
    assert reg.get(a.token).state == {"kind": "web"}
    assert reg.get(a.token, kind="web") is a
    with pytest.raises(LeaseGone, match="web"):
        reg.get(a.token, kind="nninteractive")
    with pytest.raises(LeaseGone, match="missing"):
        reg.get(None)
    with pytest.raises(LeaseGone, match="unknown"):
        reg.get("nope")
    assert reg.release(a.token) and not reg.release(a.token)
    assert closed == [{"kind": "web"}]
    with pytest.raises(LeaseGone):
        reg.get(a.token)


def test_capacity() -> None:
    reg = _registry([])
    reg.claim("a")
    b = reg.claim("b")
    with pytest.raises(ServerFull, match="capacity"):
        reg.claim("c")
    reg.release(b.token)
    reg.claim("c")
    assert len(reg) == 2


def test_idle_and_dead_leases_are_reaped() -> None:
    closed: list = []
    reg = _registry(closed)  # idle 100 s, liveness 10 s
    busy, quiet = reg.claim("busy"), reg.claim("quiet")
    t0 = time.monotonic()
    for lease in (busy, quiet):
        lease.last_active = lease.last_seen = t0
    assert reg.sweep(t0 + 5) == []
    busy.last_seen = t0 + 8  # a heartbeat: alive, not active
    assert reg.sweep(t0 + 11) == [quiet.token]  # quiet sent nothing for > 10 s
    busy.last_seen = t0 + 99  # heartbeats keep coming...
    assert reg.sweep(t0 + 99.5) == []
    assert reg.sweep(t0 + 100.5) == [busy.token]  # ...but no user action for > 100 s
    assert len(closed) == 2 and len(reg) == 0
    with pytest.raises(LeaseGone):
        reg.get(busy.token)


def test_remaining_counts_down_from_the_last_action() -> None:
    reg = _registry([])
    lease = reg.claim("x")
    lease.last_active = time.monotonic() - 30
    assert 69 < reg.remaining(lease) <= 70
    lease.mark_active()
    assert reg.remaining(lease) > 99
