"""``sammed3d`` command line: one console script with subcommands.

Each subcommand lives in its own module ``sammed3d.cli.<name>`` exposing::

    HELP: str
    def add_arguments(parser: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace) -> int

Handlers only parse, call the public API and report; heavy imports stay inside ``run`` so
``sammed3d --help`` starts fast. Expected failures (bad input, missing files) become a
one-line ``error: ...`` and exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

#: Subcommands, in the order ``--help`` lists them. Modules not present yet are skipped.
COMMANDS = (
    "demo",
    "segment",
    "evaluate",
    "metrics",
    "train",
    "prepare",
    "export",
    "serve",
    "info",
)

EXIT_USAGE = 2


class CLIError(Exception):
    """An expected failure with a one-line message for the user."""


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
)


def add_unsafe_pickle_arg(parser: argparse.ArgumentParser) -> None:
    """The shared ``--allow-unsafe-pickle`` flag of every command that reads a checkpoint."""
    parser.add_argument(
        "--allow-unsafe-pickle",
        action="store_true",
        help="allow pickled Python objects in the checkpoint (older published files; trusted only)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (tests call ``main([...])``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return EXIT_USAGE
    setup_logging(args.verbose)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except EXPECTED_ERRORS as exc:
        if args.debug:
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, FileNotFoundError) and exc.filename and str(exc.filename) not in msg:
            msg = f"{msg}: {exc.filename}"
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        if args.debug:
            raise
        print("error: out of memory", file=sys.stderr)
        return 1
