"""``sammed3d`` command line: one console script with subcommands.

Each subcommand lives in its own module ``sammed3d.cli.<name>`` exposing::

    HELP: str
    def add_arguments(parser: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace) -> int

Handlers only parse, call the public API and report; heavy imports stay inside ``run`` so
``sammed3d --help`` starts fast.

The contract every command follows (documented in ``docs/cli.md``):

* **Exit codes** (:data:`EXIT_CODES`): 0 success; 1 the command ran but produced no usable
  result (every case failed, no target scored) or an internal error (traceback); 2 bad input
  or usage, as a one-line ``error: ...`` (``--debug`` shows the traceback); 130 interrupted
  (Ctrl-C); 143 stopped by SIGTERM with its work saved (resume it).
* **Outputs**: an existing output file is replaced only with ``--overwrite``; an input is
  never replaced; the output location is checked for writability before any work starts
  (:func:`sammed3d.io.check_output_file`); files get the umask's mode.
* **Devices**: ``--device`` goes through :func:`sammed3d.devices.resolve_device`.
* **Pipes**: ``sammed3d ... | head`` is fine: once the reader is gone, stdout output is
  dropped and the command finishes its work (files are still written).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

#: Subcommands, in the order ``--help`` lists them. Modules not present yet are skipped.
COMMANDS = (
    "demo",
    "segment",
    "evaluate",
    "metrics",
    "train",
    "prepare",
    "export",
    "info",
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

#: Every exit code a command can return, with its meaning (the table in docs/cli.md).
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_FAILURE: "the command ran but produced no usable result (prepare: every case failed; "
    "evaluate: no target scored), or an internal error (a traceback: please report it)",
    EXIT_USAGE: "bad input or usage: one line 'error: ...' on stderr (--debug: the traceback)",
    EXIT_INTERRUPTED: "interrupted with Ctrl-C (SIGINT)",
    EXIT_TERMINATED: "stopped by SIGTERM after saving its work (train: resume with --resume)",
}


class CLIError(Exception):
    """An expected failure with a one-line message for the user (exit code 2)."""

    exit_code = EXIT_USAGE


class CommandFailed(CLIError):
    """The command ran but produced no usable result (exit code 1)."""

    exit_code = EXIT_FAILURE


def _add_common_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("logging")
    group.add_argument("-v", "--verbose", action="store_true", help="more log output")
    group.add_argument("--no-progress", action="store_true", help="no progress bars")
    group.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def build_parser() -> argparse.ArgumentParser:
    from sammed3d import __version__

    parser = argparse.ArgumentParser(
        prog="sammed3d",
        description="SAM-Med3D: promptable 3D medical image segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"sammed3d {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        modname = f"{__name__}.{name}"
        if importlib.util.find_spec(modname) is None:
            continue
        module = importlib.import_module(modname)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        _add_common_args(p)
        p.set_defaults(_run=module.run)
    return parser


def setup_logging(verbose: bool = False) -> None:
    """Configure the root logger for CLI use (library code only gets loggers)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s" if not verbose else "%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


#: Failures reported as a one-line ``error: ...`` (exit 2) instead of a traceback.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    CLIError,
    FileNotFoundError,
    ValueError,
    TypeError,
    NotImplementedError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    FileExistsError,
)


def add_unsafe_pickle_arg(parser: argparse.ArgumentParser) -> None:
    """The shared ``--allow-unsafe-pickle`` flag of every command that reads a checkpoint."""
    parser.add_argument(
        "--allow-unsafe-pickle",
        action="store_true",
        help="allow pickled Python objects in the checkpoint (older published files; trusted only)",
    )


def add_overwrite_arg(parser: argparse.ArgumentParser, what: str = "OUTPUT") -> None:
    """The shared ``--overwrite`` flag of every command that writes files."""
    parser.add_argument(
        "--overwrite", action="store_true", help=f"replace {what} if it exists (never an input)"
    )


def add_device_arg(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    """The shared ``--device`` option (resolved by :func:`sammed3d.devices.resolve_device`)."""
    parser.add_argument(
        "--device",
        default=default,
        help=f"auto (a GPU if usable; cuda:LOCAL_RANK under torchrun), cpu, cuda, cuda:N or mps "
        f"(default: {default})",
    )


class _PipeSafeStdout:
    """Wraps ``sys.stdout``: when the reader of a pipe goes away (``| head``), later output
    is dropped instead of raising ``BrokenPipeError`` in the middle of the work."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.closed_pipe = False

    def write(self, text: str) -> int:
        if self.closed_pipe:
            return len(text)
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._drop()
            return len(text)

    def flush(self) -> None:
        if self.closed_pipe:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._drop()

    def _drop(self) -> None:
        self.closed_pipe = True
        try:  # the interpreter flushes stdout at exit: point fd 1 at /dev/null first
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (tests call ``main([...])``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return EXIT_USAGE
    setup_logging(args.verbose)
    original = sys.stdout
    sys.stdout = _PipeSafeStdout(original)
    try:
        return _run(args)
    finally:
        sys.stdout = original


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except EXPECTED_ERRORS as exc:
        if args.debug:
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, FileNotFoundError) and exc.filename and str(exc.filename) not in msg:
            msg = f"{msg}: {exc.filename}"
        print(f"error: {msg}", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_USAGE)
    except MemoryError:
        if args.debug:
            raise
        print("error: out of memory", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:  # the machine, not the input: disk full, I/O error, ...
        if args.debug:
            raise
        print(f"error: {exc}".splitlines()[0], file=sys.stderr)
        return EXIT_FAILURE
