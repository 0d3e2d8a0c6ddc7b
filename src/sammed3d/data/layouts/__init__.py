"""Dataset layout readers, one module each, behind :class:`~.base.LayoutReader`.

:data:`READERS` is the order in which automatic detection asks them; discovery
(:mod:`sammed3d.data.layout`) chooses among them. Adding a layout is one module with a
``READER`` and one line here.
"""

from __future__ import annotations

from sammed3d.data.layouts import bids, case_folders, manifest, nnunet, per_class, totalsegmentator
from sammed3d.data.layouts.base import LayoutReader

READERS: tuple[LayoutReader, ...] = (
    nnunet.READER,
    per_class.READER,
    totalsegmentator.READER,
    case_folders.READER,
    bids.READER,
    manifest.READER,
)

#: What ``--layout`` accepts.
LAYOUT_NAMES: tuple[str, ...] = tuple(r.name for r in READERS)


def get_reader(name: str) -> LayoutReader:
    """The reader called ``name``.

    Raises:
        ValueError: no such layout (the message lists the known ones).
    """
    for reader in READERS:
        if reader.name == name:
            return reader
    raise ValueError(f"unknown layout {name!r}; choose one of {', '.join(LAYOUT_NAMES)}")
