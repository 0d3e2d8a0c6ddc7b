"""sammed3d.logs: messages logged during a step are shown after the step's own line."""

from __future__ import annotations

import logging

import pytest

from sammed3d.logs import held_messages, release


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
