"""The learned-pick probe of tools/ (pick_features.py, fit_first_pick.py,
collect_pick_features.py): its features and its fit, on small hand-made masks."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def _load(name: str) -> ModuleType:
    if str(TOOLS) not in sys.path:  # the tools import each other as scripts do
        sys.path.insert(0, str(TOOLS))
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ball(radius: float, centre=(20, 20, 20), shape=(40, 40, 40)) -> np.ndarray:
    grid = np.indices(shape).transpose(1, 2, 3, 0)
    return np.linalg.norm(grid - np.asarray(centre), axis=-1) <= radius


FULL = (slice(0, 40), slice(0, 40), slice(0, 40))


def test_click_depth_is_the_distance_to_the_outside_over_the_ball_radius():
    pf = _load("pick_features")
    slab = np.zeros((40, 40, 40), dtype=bool)
    slab[:, :, 16:25] = True  # 9 voxels thick: the click at z = 20 is 5 voxels deep
    radius = (3.0 * slab.sum() / (4.0 * np.pi)) ** (1.0 / 3.0)  # 15.1
    assert pf.click_depth(FULL, slab, (20, 20, 20), (1.0, 1.0, 1.0)) == pytest.approx(5.0 / radius)
    # in mm: a 2 mm grid doubles the distance and the radius alike
    assert pf.click_depth(FULL, slab, (20, 20, 20), (2.0,) * 3) == pytest.approx(5.0 / radius)
    assert pf.click_depth(FULL, slab, (20, 20, 30), (1.0,) * 3) == 0.0  # outside
    # a block placed by its slices: the same answer (beyond the block is outside)
    box = (slice(0, 40), slice(0, 40), slice(16, 25))
    assert pf.click_depth(box, slab[box], (20, 20, 20), (1.0,) * 3) == pytest.approx(5.0 / radius)
    # deep inside a ball: capped at 1 (sqrt(101) voxels to the outside, radius 9.98)
    assert pf.click_depth(FULL, _ball(10.0), (20, 20, 20), (1.0,) * 3) == 1.0
    with pytest.raises(ValueError, match="window must be at least 1 voxel, got 0"):
        pf.click_depth(FULL, slab, (20, 20, 20), (1.0,) * 3, window=0)


def test_image_faces_counts_the_faces_a_mask_touches():
    pf = _load("pick_features")
    mask = np.zeros((40, 40, 40), dtype=bool)
    mask[0:5, 10:20, 30:40] = True  # low face of axis 0, high face of axis 2
    assert pf.image_faces((40, 40, 40), FULL, mask) == 2
    assert pf.image_faces((40, 40, 40), FULL, _ball(5.0)) == 0
    assert pf.image_faces((40, 40, 40), FULL, np.ones((40, 40, 40), bool)) == 6


def test_extent_features_describe_each_mask_in_its_group():
    pf = _load("pick_features")
    rng = np.random.default_rng(0)
    small, large = _ball(5.0), _ball(12.0)
    image = (100.0 * small + 30.0 * large + rng.normal(0, 2, small.shape)).astype(np.float32)
    f = pf.extent_features(
        image, [(FULL, large), (FULL, small)], (20, 20, 20), (1.0,) * 3, [0.5, float("nan")], [0, 1]
    )
    col = {name: f[:, n] for n, name in enumerate(pf.FEATURES)}
    assert f.shape == (2, len(pf.FEATURES))
    assert col["edge"][1] == 0.0 and col["edge"][0] < 0  # the small ball has the sharper edge
    assert list(col["like_click"]) == [0.0, 1.0]  # the click (100) is unlike the large ball
    assert list(col["size_rank"]) == [1.0, 0.0]
    assert list(col["model_score"]) == [0.5, 0.0]  # NaN: unknown
    assert list(col["model_pick"]) == [1.0, 0.0]
    assert list(col["zoom"]) == [0.0, 1.0] and list(col["fine_zoom"]) == [0.0, 0.0]
    assert col["image_share"][1] == pytest.approx(small.sum() / small.size)
    assert pf.learned_pick(f, np.eye(len(pf.FEATURES))[pf.FEATURES.index("edge")]) == 1
    with pytest.raises(ValueError, match="need one score and one level per mask"):
        pf.extent_features(image, [(FULL, small)], (20, 20, 20), (1.0,) * 3, [], [0])
    with pytest.raises(ValueError, match=r"need \(N >= 1, 2\) features for 2 weights"):
        pf.learned_pick(f, [1.0, 2.0])


def test_the_fit_learns_a_feature_that_tells_the_best_mask():
    fit = _load("fit_first_pick")
    names = fit.FEATURES
    rng = np.random.default_rng(1)
    clicks = []
    for _ in range(40):
        f = np.zeros((3, len(names)))
        f[:, names.index("like_click")] = 1.0
        f[:, names.index("depth")] = rng.permutation([0.1, 0.5, 0.9])
        dice = f[:, names.index("depth")].copy()  # the deepest click's mask is the best
        clicks.append({"features": f, "dice": dice, "source": "toy", "family": "toy"})
    w = fit.fit(clicks, l2=1e-4)
    assert all(fit.learned_pick(c["features"], w) == np.argmax(c["dice"]) for c in clicks)
    assert fit.edge_pick_index(clicks[0]["features"]) == 0  # ties: the first


def test_a_full_mask_becomes_a_block_on_its_bounding_box():
    collect = _load("collect_pick_features")
    mask = np.zeros((10, 10, 10), dtype=bool)
    mask[2:4, 5, 7:10] = True
    slices, block = collect._block(mask)
    assert slices == (slice(2, 4), slice(5, 6), slice(7, 10)) and block.all()
    slices, block = collect._block(np.zeros((4, 4, 4), dtype=bool))
    assert block.shape == (1, 1, 1) and not block.any()


def _run(tool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TOOLS / f"{tool}.py"), *args],
        capture_output=True,
        text=True,
        cwd=TOOLS.parent,
        timeout=120,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "data/model/eval/Dataset204_Colin27_Lesions"], "must not be a held-out set"),
        (["--data", "no/such/set"], "needs nnU-Net style sets with a dataset.json"),
        (["--generated", "2", "--clicks", "0"], "--clicks must be >= 1"),
        ([], "nothing to collect"),
    ],
)
def test_collect_bad_input_is_one_line(tmp_path, args, message):
    done = _run("collect_pick_features", str(tmp_path / "t.npz"), *args)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert message in last and "Traceback" not in done.stderr
    assert not (tmp_path / "t.npz").exists()


def test_fit_bad_input_is_one_line(tmp_path):
    done = _run("fit_first_pick", str(tmp_path / "none.npz"))
    assert done.returncode == 2 and "no such table(s)" in done.stderr
    assert "Traceback" not in done.stderr
    fit = _load("fit_first_pick")
    table = tmp_path / "t.npz"
    np.savez(
        table,
        group=np.zeros(2, int),
        features=np.zeros((2, len(fit.FEATURES))),
        dice=np.zeros(2),
        source=np.asarray(["toy", "toy"]),
        names=np.asarray(fit.FEATURES),
    )
    done = _run("fit_first_pick", str(table), "--l2", "-1")
    assert done.returncode == 2 and "--l2 must be a number >= 0, got -1.0" in done.stderr
    done = _run("fit_first_pick", str(table))
    assert done.returncode == 2 and "need at least 5 clicks" in done.stderr
