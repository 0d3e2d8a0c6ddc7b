"""README's Python examples that need no input file or download run as written (a snippet
that stopped working for the bundled model went unnoticed once)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
#: A string literal naming a file, or a published checkpoint (downloaded): not run here.
NEEDS_INPUT = re.compile(r"""["'][^"'\n]*\.(nii|nii\.gz|nrrd|mha|pth|dcm)["']|["']turbo["']""")


def _blocks() -> list[tuple[int, str]]:
    text = README.read_text(encoding="utf-8")
    out = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, re.M | re.S):
        code = match.group(1)
        if not NEEDS_INPUT.search(re.sub(r"#[^\n]*", "", code)):  # comments aside
            out.append((text[: match.start()].count("\n") + 1, code))
    return out


def test_there_is_a_self_contained_example():
    assert _blocks(), "README.md has no Python example that runs without inputs"


@pytest.mark.parametrize("block", _blocks(), ids=lambda b: f"README line {b[0]}")
def test_the_example_runs(block):
    line, code = block
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "readme_example"})
