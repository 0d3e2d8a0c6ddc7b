"""One error, two audiences: a message for Python callers and one for the command line.

Library code words its errors for the API (``pass overwrite=True``); where the command line
spells the same advice differently (``pass --overwrite``), the error also carries that
wording, which the CLI prints instead of ``str(exc)``::

    raise with_cli_wording(
        FileExistsError(f"output {path} exists; pass overwrite=True to replace it"),
        f"output {path} exists; pass --overwrite to replace it",
    )
"""

from __future__ import annotations

from typing import TypeVar

_E = TypeVar("_E", bound=BaseException)

#: The attribute that holds the command line's wording of an error.
CLI_MESSAGE = "cli_message"


def with_cli_wording(exc: _E, cli_message: str) -> _E:
    """``exc`` (worded for Python callers), carrying ``cli_message`` for the command line."""
    setattr(exc, CLI_MESSAGE, cli_message)  # noqa: B010  (exceptions take any attribute)
    return exc


def cli_wording(exc: BaseException) -> str:
    """The message the command line shows for ``exc``: its CLI wording if it has one."""
    text = getattr(exc, CLI_MESSAGE, None)
    return text if isinstance(text, str) else str(exc)


def kind_of(value: object) -> str:
    """What a value is, for "expected ..., got ..." messages: ``None``, ``a list of 3 items``,
    ``an int``, ``a numpy array of shape (8, 8)``."""
    if value is None:
        return "None"
    name = type(value).__name__
    arrays = {"ndarray": "numpy array", "Tensor": "torch tensor"}
    if name in arrays:
        return f"a {arrays[name]} of shape {tuple(getattr(value, 'shape', ()))}"
    article = "an" if name[:1].lower() in "aeiou" else "a"
    if isinstance(value, list | tuple | dict | set):
        n = len(value)
        return f"{article} {name} of {n} item{'' if n == 1 else 's'}"
    return f"{article} {name}"
