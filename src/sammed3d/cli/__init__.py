"""``sammed3d`` command line: one console script with subcommands.

Each subcommand is registered in :data:`COMMANDS` (name and one-line help) and lives in its
own module ``sammed3d.cli.<name>`` exposing::

    def add_arguments(parser: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace) -> int

Registration is cheap: ``sammed3d --help`` imports no subcommand module, and
``sammed3d <name> ...`` imports only ``sammed3d.cli.<name>``. Handlers only parse, call the
public API and report; heavy imports (torch, numpy, the model) stay inside ``run``, so
``--help`` starts fast. Expected failures (bad input, missing files) become a one-line
``error: ...`` and exit code 2; ``--debug`` shows the traceback instead.

The contract every command follows (documented in ``docs/cli.md``):

* **Exit codes** (:data:`EXIT_CODES`): 0 success; 1 the command ran but produced no usable
  result (no case prepared, no target scored) or an internal error (traceback); 2 bad input
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
import dataclasses
import importlib
import logging
import math
import os
import sys
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Any, NoReturn

from sammed3d._wording import cli_wording
from sammed3d.data.dataset_json import KNOWN_MODALITIES as KNOWN_MODALITIES  # noqa: F401  (re-exported)

#: Subcommands in the order ``--help`` lists them: name -> one-line help (also the description
#: of the command's own ``--help``). Register a new command here with one line.
COMMANDS: dict[str, str] = {
    "demo": "segment a few brain structures of the bundled (held-out) MRI with a few clicks each; "
    "writes a label map, a PNG overlay and prints Dice against the atlas",
    "segment": "segment an object from clicks (native voxel indices) and write the mask",
    "evaluate": "simulate clicks on a labelled dataset and report Dice/NSD/IoU per click count",
    "predict": "whole-volume multi-class segmentation with a task model (SAM-Med3D encoder + "
    "UNETR decoder); --data scores a labelled dataset",
    "metrics": "compare a predicted label map with a ground truth; prints per-label JSON",
    "train": "train or fine-tune (published regime; torchrun for multi-GPU; resumable)",
    "prepare": "clean datasets into the per-class training layout (paper's 4-step cleaning)",
    "export": "export a checkpoint (e.g. a training run's) to the published SAM-Med3D format",
    "serve": "serve SAM-Med3D to 3D Slicer / napari (nnInteractive protocol) and a web page",
    "weights": "published weights by name: list what is here, download ahead of time, verify a "
    "file",
    "info": "print versions (fast); --devices adds devices and registered models (loads torch); "
    "--checkpoint describes a checkpoint",
}

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

#: Every exit code a command can return, with its meaning (the table in docs/cli.md).
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_FAILURE: "the command ran but produced no usable result (prepare: every case failed "
    "or was skipped; evaluate: no target scored), or an internal error (a traceback: please "
    "report it)",
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


def command_module(name: str) -> ModuleType:
    """Import and return ``sammed3d.cli.<name>`` (a registered command)."""
    if name not in COMMANDS:
        raise KeyError(f"unknown command {name!r}; registered: {', '.join(COMMANDS)}")
    return importlib.import_module(f"{__name__}.{name}")


def selected_command(argv: Sequence[str]) -> str | None:
    """The registered command named in ``argv``, if any.

    The top-level parser has only flags without values (``-h``, ``--version``), so the
    command is the first argument that does not start with ``-``.
    """
    for arg in argv:
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (exit 2): what was wrong and
    where the usage is, instead of the usage block before the error (its subcommand
    parsers are of this class too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (usage: {self.prog} --help)\n")


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The ``sammed3d`` parser.

    Args:
        commands: Commands whose modules are imported and whose arguments are added; the
            others are listed with their help only. ``None``: all registered commands.
    """
    from sammed3d._version import __version__

    full = set(COMMANDS) if commands is None else set(commands)
    parser = OneLineParser(
        prog="sammed3d",
        description="SAM-Med3D: promptable 3D medical image segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"sammed3d {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name in full:
            module = command_module(name)
            module.add_arguments(p)
            _add_common_args(p)
            p.set_defaults(_run=module.run)
    return parser


class _ConsoleFormatter(logging.Formatter):
    """Messages as written, a warning marked ``warning: `` (unless it says ``warning``/``note``
    itself), so every warning on the console reads as one, whichever module logged it."""

    MARKS = ("warning", "note", "error")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING and not text.lower().startswith(self.MARKS):
            text = f"warning: {text}"
        return text


def setup_logging(verbose: bool = False) -> None:
    """Configure the root logger for CLI use (library code only gets loggers)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s" if not verbose else "%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.setFormatter(_ConsoleFormatter("%(message)s"))


#: Failures reported as a one-line ``error: ...`` (exit 2) instead of a traceback.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    CLIError,
    FileNotFoundError,
    ValueError,
    NotImplementedError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    FileExistsError,
)


def dataclass_defaults(cls: type) -> dict[str, Any]:
    """Field name -> default of a dataclass (``default_factory`` called), without an instance.

    Commands take their option defaults from here, so the dataclass of the public API stays
    the one place that defines them (no ``__post_init__`` runs, nothing heavy is imported).

    Raises:
        TypeError: ``cls`` is not a dataclass (a programming error).
    """
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


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


def modality_arg(text: str) -> str:
    """``--modality``: a known modality or a name of one (``MRI``, ``T1``, ``FLAIR`` -> MR), in
    canonical form (:func:`sammed3d.data.dataset_json.check_modality`); anything else is a
    usage error (a typo such as ``CTT`` would otherwise silently skip the CT clamp)."""
    from sammed3d.data.dataset_json import check_modality

    try:
        return str(check_modality(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_modality_arg(parser: argparse.ArgumentParser, help: str) -> None:  # noqa: A002
    """The shared ``--modality`` option (checked by :func:`modality_arg`)."""
    parser.add_argument("--modality", type=modality_arg, help=help)


def add_irregular_slices_arg(parser: argparse.ArgumentParser, written: str) -> None:
    """The shared ``--irregular-slices`` option of every command that reads a DICOM series
    as an image (``written``: what is then on the regular grid, for the help text)."""
    parser.add_argument(
        "--irregular-slices",
        choices=("error", "resample"),
        default="error",
        help="a DICOM series with unevenly spaced slices (one missing, say): refuse it "
        "(default), or resample it onto a regular grid through the true slice positions "
        f"({written})",
    )


def add_device_arg(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    """The shared ``--device`` option (resolved by :func:`sammed3d.devices.resolve_device`)."""
    parser.add_argument(
        "--device",
        default=default,
        help=f"auto (a GPU if usable; cuda:LOCAL_RANK under torchrun), cpu, cuda, cuda:N or mps "
        f"(default: {default})",
    )


def add_extension_args(parser: argparse.ArgumentParser, no_extend_help: str) -> None:
    """The shared ``--no-extend`` / ``--max-rois`` pair (large objects over several ROIs)."""
    parser.add_argument("--no-extend", action="store_true", help=no_extend_help)
    parser.add_argument(
        "--max-rois", type=int, default=8, help="bound on the ROIs per object (default 8)"
    )


#: The options of the inference rules a checkpoint carries (zoom-in, boundary refinement,
#: contrast guard, first pick, later check, the fine zoom lattice, the rim edit, click
#: bounds): ``--flag`` -> predictor keyword.
RULE_OPTIONS = {
    "--zoom-spacing": "zoom_spacing",
    "--fine-zoom-spacing": "fine_zoom_spacing",
    "--refine-boundary": "refine_boundary",
    "--contrast-guard": "contrast_guard",
    "--first-pick": "first_pick",
    "--later-check": "later_check",
    "--rim-edit": "rim_edit",
    "--click-bounds": "click_bounds",
}


def add_rule_args(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """The shared options of the inference rules that travel with a checkpoint."""
    from sammed3d.config import (  # at run time: keeps --help light
        CLICK_BOUNDS,
        FIRST_PICKS,
        LATER_CHECKS,
    )

    parser.add_argument(
        "--zoom-spacing",
        type=float,
        metavar="MM",
        help=f"{prefix}zoom-in: when the first mask of an object is small (its box within 55%% "
        "of a 128-voxel ROI at this spacing), redo it in a ROI of this spacing in mm, finer "
        "than the 1.5 mm lattice (0: off; default: the checkpoint's setting, 1.0 for the "
        "bundled model, off for the published ones)",
    )
    parser.add_argument(
        "--fine-zoom-spacing",
        type=float,
        metavar="MM",
        help=f"{prefix}a second, finer zoom lattice: a first click's masks in a ROI of this "
        "spacing in mm (finer than --zoom-spacing) are offered among its masks too, so the "
        "edge pick can take them; slower first clicks (0: off; default: the checkpoint's "
        "setting, off for the bundled and the published models)",
    )
    parser.add_argument(
        "--refine-boundary",
        type=float,
        metavar="MM",
        help=f"{prefix}boundary refinement: decide the voxels within this many mm of a "
        "mask's boundary again by intensity, from histograms of the mask's inside and of a "
        "ring around it; rounded to whole voxels of the ROI's lattice (1.5 mm; the zoom "
        "lattice's for a zoomed-in object; at least one), at most "
        "10 (0: off; default: the checkpoint's setting, 3 for the bundled model, off for the "
        "published ones)",
    )
    parser.add_argument(
        "--contrast-guard",
        type=float,
        metavar="C",
        help=f"{prefix}contrast guard: a first-click mask whose border contrast (|mean "
        "inside - mean of a 2-voxel ring| / sum of their std) is below C gives way to the "
        "model's mask of the highest contrast, if at least twice as high and at least C; a "
        "later click that more than doubles the mask into one of contrast below C and below "
        "half the previous one is not taken; at most 10 (0: off; default: the checkpoint's "
        "setting, 0.4 for the bundled model, off for the published ones)",
    )
    parser.add_argument(
        "--first-pick",
        choices=FIRST_PICKS,
        help=f"{prefix}which of a first click's masks an object gets: the model's ranking, "
        "or the mask whose border follows the strongest intensity edge (edges; the contrast "
        "guard then acts on later clicks only; default: the checkpoint's setting, edges for "
        "the bundled model, model for the published ones)",
    )
    parser.add_argument(
        "--later-check",
        choices=LATER_CHECKS,
        help=f"{prefix}edges: a later click whose mask loses its edges (edge score below 70%% "
        "of the previous mask's for a positive click, 30%% for a negative one) is refused: the "
        "mask stays and the click is not kept; fewer clicks that lower Dice, but held out the mean "
        "Dice at 3 and 5 clicks fell (none: every click's mask is taken; default: the "
        "checkpoint's setting, none for the bundled and the published models)",
    )
    parser.add_argument(
        "--rim-edit",
        type=float,
        metavar="MM",
        help=f"{prefix}rim edit: a positive later click that touches the mask of a small "
        "(zoomed-in) object changes the model's logits only within this many mm of the "
        "click, instead of wherever its new answer differs (the mask can move a little "
        "further out through upsampling and boundary refinement); at most 10 (0: off; "
        "default: the checkpoint's setting, 3 for the bundled model, off for the published "
        "ones)",
    )
    parser.add_argument(
        "--click-bounds",
        choices=CLICK_BOUNDS,
        help=f"{prefix}click bounds: the mask after a negative later click stays within the "
        "mask before it, without the clicked voxel (negative), and with both the mask after a "
        "positive later click holds the mask before it; fewer clicks that lower Dice, but held out "
        "the mean Dice at 5 clicks fell (none: the model's answer is taken as it is; default: "
        "the checkpoint's setting, none for the bundled and the published models)",
    )


def check_rule_args(args: argparse.Namespace) -> None:
    """Raises :class:`CLIError` for a bad value of an :data:`RULE_OPTIONS` option."""
    from sammed3d.config import check_contrast_guard, check_refine_boundary, check_rim_edit
    from sammed3d.data.transforms import DEFAULT_SPACING  # at run time: keeps --help light

    zoom = args.zoom_spacing
    if zoom is not None and not (math.isfinite(zoom) and zoom >= 0):
        raise CLIError(f"--zoom-spacing must be 0 (off) or a spacing in mm, got {zoom}")
    coarse = min(DEFAULT_SPACING)
    if zoom and zoom >= coarse:
        raise CLIError(
            f"--zoom-spacing must be finer than the {coarse:g} mm lattice (0: off), got {zoom:g}"
        )
    fine = args.fine_zoom_spacing
    if fine is not None and not (math.isfinite(fine) and fine >= 0):
        raise CLIError(f"--fine-zoom-spacing must be 0 (off) or a spacing in mm, got {fine}")
    if fine and zoom == 0:
        raise CLIError(
            f"--fine-zoom-spacing {fine:g} needs zoom-in, which --zoom-spacing 0 turns off"
        )
    if fine and zoom is not None and not fine < zoom:
        raise CLIError(
            f"--fine-zoom-spacing must be finer than --zoom-spacing ({zoom:g} mm; 0: off), "
            f"got {fine:g}"
        )
    for flag, check in (
        ("--refine-boundary", check_refine_boundary),
        ("--contrast-guard", check_contrast_guard),
        ("--rim-edit", check_rim_edit),
    ):
        value = getattr(args, RULE_OPTIONS[flag])
        if value is not None:
            try:
                check(value, flag)  # the checkpoint field's own check, naming the flag
            except ValueError as err:
                raise CLIError(str(err)) from None


def rule_kwargs(args: argparse.Namespace) -> dict[str, float | str | None]:
    """The predictor keywords of the :data:`RULE_OPTIONS` options (None: the checkpoint's)."""
    return {key: getattr(args, key) for key in RULE_OPTIONS.values()}


def check_max_rois(value: int) -> None:
    """Raises :class:`CLIError` for a ``--max-rois`` below 1."""
    if value < 1:
        raise CLIError(f"--max-rois must be >= 1, got {value}")


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
    argv = sys.argv[1:] if argv is None else list(argv)
    command = selected_command(argv)
    parser = build_parser([] if command is None else [command])
    args, extra = parser.parse_known_args(argv)
    if extra:
        # KEY=VALUE overrides may come on both sides of an option (``train a=1 -o DIR b=2``):
        # argparse gives a list positional only the first run of them
        if isinstance(getattr(args, "overrides", None), list) and all(
            "=" in e and not e.startswith("-") for e in extra
        ):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
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
        from sammed3d.weights import progress_bars  # --no-progress also quiets downloads

        with progress_bars(False if args.no_progress else None):
            return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except EXPECTED_ERRORS as exc:
        if args.debug:
            raise
        text = cli_wording(exc).strip()  # an API error's advice as the command line spells it
        msg = text.splitlines()[0] if text else type(exc).__name__
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
