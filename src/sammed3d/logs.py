"""Messages of one step, shown after that step's own line; a notice when a step is slow.

A click in ``sammed3d segment`` or ``sammed3d demo`` prints one line when it is done; what
the library logs while the click runs (e.g. that ROI extension reached its budget) would
otherwise come before that line and read as if it belonged to the click before. A click on a
large object can take many seconds (each ROI it spans is predicted in turn):
:func:`notice_if_slow` says so while it runs.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class _Hold(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def held_messages(name: str = "sammed3d.inference") -> Iterator[list[logging.LogRecord]]:
    """Hold what the logger ``name`` (and its children) logs inside the block.

    Yields the list the records collect in; :func:`release` logs them afterwards (nothing
    is lost if the block raises: the records are released then).
    """
    log = logging.getLogger(name)
    hold = _Hold()
    propagate = log.propagate
    log.addHandler(hold)
    log.propagate = False
    failed = True
    try:
        yield hold.records
        failed = False
    finally:
        log.removeHandler(hold)
        log.propagate = propagate
        if failed:
            release(hold.records)


def release(records: list[logging.LogRecord], indent: str = "  ") -> None:
    """Log held records now, each message indented by ``indent`` (then empty the list)."""
    for record in records:
        record.msg = indent + str(record.msg)
        logging.getLogger(record.name).handle(record)
    records.clear()


@contextmanager
def notice_if_slow(text: str, after: float = 2.0, stream: TextIO | None = None) -> Iterator[None]:
    """Print ``text`` (one line, to ``stream``, default stdout) if the block is still running
    ``after`` seconds in; nothing for a faster block.

    Raises:
        ValueError: ``after`` is negative.
    """
    if not after >= 0:
        raise ValueError(f"after must be >= 0 seconds, got {after}")
    out = stream if stream is not None else sys.stdout

    def show() -> None:
        print(text, file=out, flush=True)

    timer = threading.Timer(after, show)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join()  # a notice being printed is finished before the step's own line
