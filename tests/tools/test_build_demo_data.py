"""The structure rules of tools/build_demo_data.py and the picture of
tools/plot_anatomy_structures.py, on a small phantom brain (no downloads)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _phantom() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A 1 mm "brain" (radius 40) of grey matter around white matter (radius 30), with two
    dark ventricles inside the white matter and a dark deep slab inside a grey-matter septum
    (the interhemispheric fissure of MNI152)."""
    grid = np.indices((96, 96, 96)).astype(np.float32)
    dist = np.sqrt(((grid - 48) ** 2).sum(0))
    brain = dist < 40
    t1 = np.where(brain, 150.0, 0.0)
    wm = dist < 30
    t1[wm] = 210.0
    septum = brain & (np.abs(grid[0] - 48) <= 5) & (grid[1] < 48)
    t1[septum] = 150.0
    fissure = septum & (np.abs(grid[0] - 48) <= 2) & (np.abs(grid[1] - 36) <= 8)
    fissure &= np.abs(grid[2] - 48) <= 10
    t1[fissure] = 60.0
    ventricles = np.zeros(t1.shape, dtype=bool)
    for x in (36, 60):
        ventricles |= (np.abs(grid[0] - x) <= 4) & (np.abs(grid[1] - 58) <= 6)
    ventricles &= np.abs(grid[2] - 48) <= 8
    t1[ventricles] = 60.0
    # a little CSF at the surface, so the three intensity classes exist
    t1[brain & (dist >= 38)] = 80.0
    rng = np.random.default_rng(0)
    t1 = t1 + rng.normal(0, 2.0, t1.shape) * brain
    return t1.astype(np.float32), brain, ventricles, fissure


def test_training_ventricles_are_the_dark_components_bordered_by_white_matter() -> None:
    tool = _load("build_demo_data")
    t1, brain, ventricles, fissure = _phantom()
    plain = tool.visible_structures(t1, brain, 1.0)["lateral_ventricles"]
    found = tool.training_structures(t1, brain, 1.0)
    got = found["lateral_ventricles"]
    # the evaluation rule keeps one component (the bigger dark one); the training rule keeps
    # both ventricles (bordered by white matter) and never the fissure (bordered by grey matter)
    assert not (got & fissure).any()
    for x in (36, 60):
        assert got[x, 58, 48]
    inter = (got & ventricles).sum() / ventricles.sum()
    assert inter > 0.6
    assert plain.sum() < got.sum()
    assert found["whole_brain"].sum() >= brain.sum()


def test_plot_anatomy_structures_writes_a_png(tmp_path: Path) -> None:
    image = np.zeros((20, 20, 20), dtype=np.float32)
    bits = np.zeros(image.shape, dtype=np.uint8)
    bits[4:16, 4:16, 4:16] = 1
    bits[8:12, 8:12, 8:12] |= 2
    path = tmp_path / "anatomy.npz"
    np.savez(path, image=image, structures=bits, structure_names=np.array(["brain", "core"]))
    out = tmp_path / "pic" / "structures.png"
    proc = subprocess.run(
        [sys.executable, str(TOOLS / "plot_anatomy_structures.py"), str(path), str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    np.savez(path, image=image)
    proc = subprocess.run(
        [sys.executable, str(TOOLS / "plot_anatomy_structures.py"), str(path), str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "has no 'image' and 'structures' maps; rebuild it" in proc.stderr


def test_plot_anatomy_structures_bad_files_give_one_line(tmp_path: Path) -> None:
    image = np.zeros((20, 20, 20), dtype=np.float32)
    bits = np.zeros(image.shape, dtype=np.uint8)
    bits[4:16, 4:16, 4:16] = 1  # bit 1 named below but set nowhere
    cases = {
        "missing.npz": "cannot read",
        "text.npz": "is not an .npz file",
        "shape.npz": "must be 3-D of one shape",
        "empty.npz": "the structures map is empty",
    }
    (tmp_path / "text.npz").write_text("not an archive")
    np.savez(tmp_path / "shape.npz", image=image, structures=bits[:-1])
    np.savez(tmp_path / "empty.npz", image=image, structures=np.zeros_like(bits))
    for name, message in cases.items():
        proc = subprocess.run(
            [
                sys.executable,
                str(TOOLS / "plot_anatomy_structures.py"),
                str(tmp_path / name),
                str(tmp_path / "out.png"),
            ],  # fmt: skip
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 2, (name, proc.stderr)
        assert message in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
    # unnamed structures and a named structure that is empty still draw
    np.savez(tmp_path / "nonames.npz", image=image, structures=bits)
    np.savez(tmp_path / "emptybit.npz", image=image, structures=bits,
             structure_names=np.array(["brain", "core"]))  # fmt: skip
    for name in ("nonames.npz", "emptybit.npz"):
        proc = subprocess.run(
            [
                sys.executable,
                str(TOOLS / "plot_anatomy_structures.py"),
                str(tmp_path / name),
                str(tmp_path / f"{name}.png"),
            ],  # fmt: skip
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr


def test_generated_cases_start_at_their_seed() -> None:
    """The tuning twin of the held-out generated crops draws other seeds than the held-out set
    (seeds 0..N-1): case i of ``generated_cases(n, first)`` is the generator's seed first + i."""
    import torch

    from sammed3d.training.synthesis import SyntheticGenerator

    build = _load("build_demo_data")
    ((name, image, label),) = build.generated_cases(1, 60_000)
    assert name == "synth000" and image.spacing == (1.5, 1.5, 1.5)
    expected_image, expected_label = SyntheticGenerator().sample_raw(60_000, 1)
    assert np.array_equal(image.array, expected_image.numpy().astype(np.float32))
    assert np.array_equal(label.array, expected_label[0].numpy().astype(np.uint8))
    held_out = SyntheticGenerator().sample_raw(0, 1)[0]
    assert not torch.equal(held_out, expected_image)


def test_a_smaller_synthetic_tuning_set_leaves_no_old_cases(tmp_path: Path) -> None:
    tool = TOOLS / "build_tuning_sets.py"
    for n in ("2", "1"):
        argv = [sys.executable, str(tool), "--out", str(tmp_path), "--synthetic", n]
        proc = subprocess.run([*argv, "--only-synthetic"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    images = sorted(p.name for p in (tmp_path / "Dataset308_Synthetic" / "imagesTs").iterdir())
    labels = sorted(p.name for p in (tmp_path / "Dataset308_Synthetic" / "labelsTs").iterdir())
    assert images == ["synth000_0000.nii.gz"] and labels == ["synth000.nii.gz"]


def test_bad_tuning_set_options_are_one_line_errors(tmp_path: Path) -> None:
    tool = TOOLS / "build_tuning_sets.py"
    for args, expected in (
        (["--only-synthetic"], "--only-synthetic needs --synthetic N with N >= 1"),
        (["--synthetic", "-1"], "--synthetic must be >= 0, got -1"),
        (["--synthetic", "2", "--only-synthetic", "--fresh-lesions", "3"], "drop --fresh-lesions"),
    ):
        argv = [sys.executable, str(tool), "--out", str(tmp_path), *args]
        proc = subprocess.run(argv, capture_output=True, text=True)
        assert proc.returncode == 2
        last = proc.stderr.strip().splitlines()[-1]
        assert expected in last and "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())  # nothing written
