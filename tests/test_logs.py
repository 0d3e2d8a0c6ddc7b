"""sammed3d.logs: messages logged during a step are shown after the step's own line; a slow
step says that it is still running."""

from __future__ import annotations

import io
import logging
import threading
import time

import pytest

from sammed3d.logs import held_messages, notice_if_slow, release


def test_messages_are_held_then_released_indented_in_order(caplog):
    caplog.set_level(logging.INFO)
    inner = logging.getLogger("sammed3d.inference.extend")
    outer = logging.getLogger("sammed3d.demo")
    with held_messages() as held:
        inner.info("extension stopped at %d ROIs", 3)
        inner.debug("not enabled: never created")
    outer.info("click 1 done")
    assert [r.getMessage() for r in held] == ["extension stopped at 3 ROIs"]
    release(held)
    assert held == []
    assert [r.getMessage() for r in caplog.records] == [
        "click 1 done",
        "  extension stopped at 3 ROIs",
    ]
    assert logging.getLogger("sammed3d.inference").propagate  # restored


def test_a_failing_step_loses_no_message(caplog):
    caplog.set_level(logging.INFO)
    with pytest.raises(RuntimeError), held_messages():
        logging.getLogger("sammed3d.inference.session").warning("before the failure")
        raise RuntimeError("boom")
    assert [r.getMessage() for r in caplog.records] == ["  before the failure"]


def test_a_slow_step_prints_its_notice_once_and_a_fast_one_nothing():
    out = io.StringIO()
    with notice_if_slow("click 1/1: still segmenting", after=0.0, stream=out):
        for _ in range(400):  # the step: the notice comes while it runs
            if out.getvalue():
                break
            time.sleep(0.025)
        assert out.getvalue() == "click 1/1: still segmenting\n"
    out = io.StringIO()
    with notice_if_slow("never", after=60.0, stream=out):
        pass
    assert out.getvalue() == ""  # and no timer is left behind
    assert not [t for t in threading.enumerate() if isinstance(t, threading.Timer)]
    with pytest.raises(ValueError, match="after must be >= 0 seconds, got -1"):
        with notice_if_slow("x", after=-1):
            pass
