"""A fresh clone with no ``../shared`` beside it: the suite collects and skips cleanly.

The files git would put in a clone (tracked plus untracked-but-not-ignored, so uncommitted
work is included and ``.venv``/build outputs are not) are copied into an empty temporary
folder; pytest then runs there on that copy's ``src`` with this interpreter. Collection must
succeed, and every test that reads ``../shared`` (marker ``shared``) must skip with a reason
instead of erroring.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _clone_files() -> list[str]:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    proc = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"not a git checkout: {REPO}")
    return [name for name in proc.stdout.decode().split("\0") if name]


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fresh_clone") / "sammed3d"
    for name in _clone_files():
        src = REPO / name
        if src.is_file():  # deleted-but-tracked files are not in a clone of the work tree
            dst = root / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    assert not (root.parent / "shared").exists()
    return root


def _pytest_in(clone: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(clone / "src"), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=clone,
        env=env,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=600,
    )


def test_package_comes_from_the_clone(clone):
    env = {**os.environ, "PYTHONPATH": str(clone / "src")}
    out = subprocess.run(
        [sys.executable, "-c", "import sammed3d; print(sammed3d.__file__)"],
        cwd=clone, env=env, capture_output=True, check=True, encoding="utf-8",
    ).stdout  # fmt: skip
    assert Path(out.strip()).is_relative_to(clone)


def test_suite_collects_without_shared(clone):
    proc = _pytest_in(clone, "--collect-only", "-q")
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, tail
    summary = proc.stdout.strip().splitlines()[-1]  # "N tests collected in ..."
    assert "collected" in summary and "error" not in summary, tail


def test_shared_tests_skip_with_a_reason(clone):
    proc = _pytest_in(clone, "-q", "-m", "shared", "-rs")
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, tail
    assert "no ../shared/fixtures beside the repository" in proc.stdout, tail
    summary = proc.stdout.strip().splitlines()[-1]
    assert "skipped" in summary and "passed" not in summary and "failed" not in summary, tail


def test_dev_runs_commands_in_the_callers_folder(tmp_path: Path) -> None:
    """`./dev <command>` is `sammed3d <command>` in `.venv`: relative paths are the caller's,
    not the repository's (a new user ran `../sammed3d/dev segment img.nii.gz` and was told the
    file did not exist)."""
    dev = Path(__file__).resolve().parents[1] / "dev"
    if not (dev.parent / ".venv" / "bin" / "sammed3d").exists():
        pytest.skip("./dev has not set up .venv here")
    (tmp_path / "not_a_checkpoint.pth").write_text("hello")
    run = subprocess.run(
        [str(dev), "info", "--checkpoint", "not_a_checkpoint.pth"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2, run.stderr
    # found in the caller's folder (and refused for what it is), not "no such file"
    assert "not_a_checkpoint.pth" in run.stderr
    assert "no such file" not in run.stderr.lower() and "not found" not in run.stderr.lower()
