"""Packages whose public names are imported on first use (module ``__getattr__``, PEP 562).

A package lists ``name -> defining module`` and installs the two hooks::

    _LAZY_EXPORTS = {"build_model": "sammed3d.build"}
    __getattr__, __dir__ = lazy_exports(__name__, _LAZY_EXPORTS)

``import package`` then imports none of those modules (``--help`` stays fast); the first
``package.build_model`` or ``from package import build_model`` imports ``sammed3d.build`` and
caches the name in the package, so later uses cost a dictionary look-up.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package with lazily imported public names.

    Args:
        package: The package's ``__name__`` (it must be importing, i.e. in ``sys.modules``).
        exports: Public name -> the module that defines it.

    Returns:
        ``(__getattr__, __dir__)``; ``__getattr__`` raises ``AttributeError`` for other names.
    """
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
