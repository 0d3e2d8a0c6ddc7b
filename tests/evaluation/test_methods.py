"""Click methods: the model through the InteractiveSession users run (tiny model, random
weights) and the region-growing baseline."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sammed3d import build_model, save_checkpoint
from sammed3d.cli import main
from sammed3d.clicks import Click
from sammed3d.data.layout import discover_dataset, iter_targets
from sammed3d.evaluation import EvalConfig, evaluate_targets
from sammed3d.evaluation.methods import ClickMethod, ModelMethod, RegionGrowing
from sammed3d.evaluation.reports import read_rows
from sammed3d.inference import InteractiveSession, SamMed3DPredictor
from sammed3d.io import Volume, read_volume
from tests.conftest import randomize_
from tests.evaluation.synthetic import make_case, make_nnunet_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_nnunet_dataset(tmp_path_factory.mktemp("sess") / "Dataset001_Toy", n_cases=1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = randomize_(build_model("sam_med3d_tiny"), seed=1)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny.pth")


def _session(checkpoint: Path) -> InteractiveSession:
    return InteractiveSession(SamMed3DPredictor.from_checkpoint(checkpoint, "cpu"))


def test_harness_scores_what_the_session_returns(
    dataset: Path, checkpoint: Path, tmp_path: Path
) -> None:
    targets = iter_targets(discover_dataset(dataset))[:1]  # the ball of case_0
    method = ModelMethod(_session(checkpoint))
    cfg = EvalConfig(clicks=(1, 3), strategy=("random",), roi="gt", seed=4)
    result = evaluate_targets(method, targets, tmp_path, cfg, show_progress=False)
    assert result.evaluated == 1
    assert len(method.session.clicks) == 3  # every simulated click went through the session
    rows = read_rows(tmp_path / "per_click.csv")

    # replay the recorded clicks by hand, as a user would, and score the result
    image = read_volume(targets[0].image)
    gt = read_volume(targets[0].label).array == targets[0].label_value
    user = _session(checkpoint)
    user.set_image(image, modality="CT")
    user.new_object()
    user.set_roi_from_mask(gt)
    assert user.roi.key == method.session.tiles[0].roi.key  # ROI of the published protocol
    for row in rows:
        mask = user.add_point((row["coord_i"], row["coord_j"], row["coord_k"]), row["positive"])
        dice = 2 * (mask & gt).sum() / (mask.sum() + gt.sum())
        assert row["dice"] == pytest.approx(dice)
    assert np.array_equal(mask, method.session.mask)


def test_first_click_lies_in_the_roi(dataset: Path, checkpoint: Path) -> None:
    method = ModelMethod(_session(checkpoint))
    assert isinstance(method, ClickMethod)
    image = read_volume(dataset / "imagesTr" / "case_0_0000.nii.gz")
    gt = read_volume(dataset / "labelsTr" / "case_0.nii.gz").array == 1
    method.set_image(image, modality="CT")
    assert method.roi_contains(np.argwhere(gt)) is None
    method.start_target(roi_mask=gt)
    inside = method.roi_contains(np.argwhere(gt))
    assert inside is not None and inside.shape == (int(gt.sum()),) and inside.all()
    method.start_target(roi_mask=None)
    assert method.roi_contains(np.argwhere(gt)) is None
    with pytest.raises(TypeError, match="InteractiveSession"):
        ModelMethod(object())  # type: ignore[arg-type]


def test_cli_evaluates_a_checkpoint(
    dataset: Path,
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sammed3d.evaluation import evaluator

    titles: list[str] = []
    plot = evaluator.plot_dice_vs_clicks

    def recording(*args: Any, title: str, **kwargs: Any) -> Any:
        titles.append(title)
        return plot(*args, title=title, **kwargs)

    monkeypatch.setattr(evaluator, "plot_dice_vs_clicks", recording)
    out = tmp_path / "model"
    argv = ["evaluate", "--data", str(dataset), "--checkpoint", str(checkpoint), "--clicks", "2"]
    argv += ["--output", str(out), "--device", "cpu", "--no-extend"]
    torch.manual_seed(0)
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert "Dice (2 targets, 0 skipped)" in printed.out
    # the model by its name (the method is the code path, sam_med3d, whatever the model)
    assert "evaluate sam_med3d_tiny: " in printed.err  # the progress bar
    assert titles == ["sam_med3d_tiny (tiny.pth): Dice vs clicks (2 targets)"]
    summary = (out / "summary.json").read_text(encoding="utf-8")
    assert '"run.method": "sam_med3d"' in summary
    assert '"run.model": "sam_med3d_tiny"' in summary
    assert '"extend": false' in summary
    assert len(read_rows(out / "per_click.csv")) == 4


def test_methods_compared_side_by_side_score_the_same_targets(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 1-voxel target (smaller than one 1.5 mm lattice voxel) and an image the model
    refuses: neither shrinks the model's target set below the baseline's."""
    import json

    from sammed3d.io import write_volume

    data = make_nnunet_dataset(tmp_path / "Dataset009_Dot", n_cases=1)
    label_path = data / "labelsTr" / "case_0.nii.gz"
    label = read_volume(label_path)
    arr = label.array.copy()
    arr[3, 3, 3] = 3  # one voxel
    write_volume(label.with_array(arr), label_path)
    meta = json.loads((data / "dataset.json").read_text())
    meta["labels"]["dot"] = 3
    (data / "dataset.json").write_text(json.dumps(meta))

    keys = {}
    for method in ("sam-med3d", "region-growing"):
        argv = ["evaluate", "--data", str(data), "--clicks", "1,2", "--method", method]
        argv += ["--output", str(tmp_path / method), "--no-progress"]
        if method == "sam-med3d":
            argv += ["--checkpoint", str(checkpoint), "--device", "cpu", "--no-extend"]
        assert main(argv) == 0
        rows = read_rows(tmp_path / method / "per_click.csv")
        keys[method] = {(r["class"], r["label"]) for r in rows}
        summary = json.loads((tmp_path / method / "summary.json").read_text())
        assert summary["n_targets"] == 3 and summary["n_skipped"] == 0, method
    assert keys["sam-med3d"] == keys["region-growing"] == {("ball", 1), ("box", 2), ("dot", 3)}
    capsys.readouterr()


def test_a_method_that_refuses_the_image_scores_misses(
    dataset: Path, checkpoint: Path, tmp_path: Path
) -> None:
    class Refuses(ModelMethod):
        def set_image(self, image: Volume, *, modality: str | None = None) -> None:
            raise ValueError("this method cannot read this image")

    targets = iter_targets(discover_dataset(dataset))
    cfg = EvalConfig(clicks=(1, 2), seed=4)
    res = evaluate_targets(
        Refuses(_session(checkpoint)), targets, tmp_path, cfg, show_progress=False
    )
    assert res.evaluated == 2 and res.failed == 2 and res.skipped == 0
    assert res.summary is not None and res.summary["overall"]["2"]["dice"]["mean"] == 0.0
    assert "cannot read this image" in (tmp_path / "failed.csv").read_text()


def test_region_growing_baseline(dataset: Path, tmp_path: Path) -> None:
    targets = iter_targets(discover_dataset(dataset))
    cfg = EvalConfig(clicks=(1, 3), seed=0, metrics=("dice", "hd95"))
    evaluate_targets(RegionGrowing(), targets, tmp_path, cfg, show_progress=False)
    rows = read_rows(tmp_path / "per_click.csv")
    ball = [r for r in rows if r["class"] == "ball"]
    box = [r for r in rows if r["class"] == "box"]
    assert min(r["dice"] for r in ball) > 0.9
    assert min(r["dice"] for r in box) > 0.9
    assert all(math.isfinite(r["hd95"]) for r in rows)


def test_region_growing_negative_click_removes_region() -> None:
    image, label = make_case(0)
    vol = Volume(image, (1.0, 1.25, 2.0))
    rg = RegionGrowing()
    assert isinstance(rg, ClickMethod)
    rg.set_image(vol)
    rg.start_target(roi_mask=label == 2, gt=None)  # the box centres the growing box
    inside = rg.roi_contains(np.argwhere(label == 2))
    assert inside is not None and inside.all()
    rg.start_target(roi_mask=None, gt=None)
    assert rg.roi_contains(np.argwhere(label == 2)) is None  # placed by the first click
    ball_voxel = tuple(int(v) for v in np.argwhere(label == 1)[0])
    mask = rg.add_click(Click(ball_voxel, True))
    assert (mask & (label == 1)).sum() > 0.9 * (label == 1).sum()
    mask = rg.add_click(Click(ball_voxel, False))
    assert not mask.any()
    with pytest.raises(ValueError, match="outside"):
        rg.add_click(Click((99, 0, 0), True))
