"""Cheap command registration: ``--help``, ``info`` and ``prepare --help`` load no torch.

The speed itself is measured by ``benchmarks/bench_startup.py`` (not a timed test); these
tests check the cause of a slow start, the heavy modules a command imports.
"""

from __future__ import annotations

import pytest

from sammed3d import cli
from tests.conftest import run_fresh_python

HEAVY = ("torch", "numpy", "scipy", "SimpleITK", "nibabel", "monai", "matplotlib")

_PROBE = """
import json, sys
from sammed3d.cli import main
try:
    code = main({argv!r})
except SystemExit as exc:
    code = exc.code
mods = [m for m in {heavy!r} if m in sys.modules]
cli_mods = sorted(m for m in sys.modules if m.startswith("sammed3d.cli."))
print(json.dumps({{"code": code, "heavy": mods, "cli": cli_mods}}))
"""


def _probe(argv: list[str]) -> dict[str, object]:
    code = _PROBE.format(argv=argv, heavy=HEAVY)
    return run_fresh_python(code)


def test_top_level_help_imports_no_command_module():
    out = _probe(["--help"])
    assert out == {"code": 0, "heavy": [], "cli": []}


@pytest.mark.parametrize(
    ("argv", "module"),
    [(["prepare", "--help"], "sammed3d.cli.prepare"), (["info"], "sammed3d.cli.info")],
)
def test_command_imports_only_its_module_and_no_torch(argv, module):
    out = _probe(argv)
    assert out == {"code": 0, "heavy": [], "cli": [module]}


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert f"    {name} " in text


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_registered_command_has_a_module(name):
    module = cli.command_module(name)
    assert callable(module.add_arguments) and callable(module.run)


def test_full_parser_builds_every_command():
    parser = cli.build_parser()
    args = parser.parse_args(["info", "--json"])
    assert args.command == "info" and args.json and args._run is cli.command_module("info").run


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["prepare", "src", "-o", "out"], "prepare"),
        (["--version"], None),
        (["-h", "info"], "info"),
        (["nope", "info"], None),
        (["--", "info"], None),
        ([], None),
    ],
)
def test_selected_command(argv, expected):
    assert cli.selected_command(argv) == expected


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["frobnicate"])
    assert exc.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "prog", "match"),
    [
        (["frobnicate"], "sammed3d", "invalid choice: 'frobnicate'"),
        (["evaluate", "--clicks", "x", "-o", "out"], "sammed3d evaluate", "got 'x'"),
        (["segment"], "sammed3d segment", "the following arguments are required"),
    ],
)
def test_usage_errors_are_one_line_naming_the_help(capsys, argv, prog, match):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"{prog}: error: ") and match in err
    assert err.rstrip().endswith(f"(usage: {prog} --help)")
