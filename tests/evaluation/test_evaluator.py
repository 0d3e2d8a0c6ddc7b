"""Evaluation harness: oracle/known-Dice click methods, protocol, CSV vs summary, resume, shards."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from sammed3d._wording import cli_wording
from sammed3d.clicks import Click
from sammed3d.data.layout import discover_dataset, iter_targets
from sammed3d.evaluation import (
    EvalConfig,
    evaluate_targets,
    merge_results,
    parse_shard,
    shard_from_env,
)
from sammed3d.evaluation.reports import read_rows
from sammed3d.io import Volume, read_volume
from tests.evaluation.synthetic import (
    HalfMethod,
    OracleMethod,
    RecordingMethod,
    make_case,
    make_nnunet_dataset,
)

CFG = EvalConfig(clicks=(1, 3), strategy=("random",), seed=7)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_nnunet_dataset(tmp_path_factory.mktemp("data") / "Dataset001_Toy")


@pytest.fixture(scope="module")
def targets(dataset: Path) -> list:
    return iter_targets(discover_dataset(dataset, split="train"))


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _without_time(path: Path) -> list[dict[str, str]]:
    """CSV rows without the (machine-dependent) seconds column."""
    rows = _csv(path)
    for r in rows:
        r.pop("seconds")
    return rows


def test_oracle_scores_one_and_empty_targets_are_skipped(targets: list, tmp_path: Path) -> None:
    oracle = OracleMethod()
    result = evaluate_targets(oracle, targets, tmp_path, CFG, show_progress=False)
    assert (result.evaluated, result.skipped) == (3, 1)  # case_1 has no box
    assert oracle.images == 2
    rows = _csv(tmp_path / "per_click.csv")
    assert len(rows) == 3 * 3  # 3 targets x clicks 1..3
    assert {float(r["dice"]) for r in rows} == {1.0}
    assert {float(r["nsd"]) for r in rows} == {1.0}
    assert {float(r["iou"]) for r in rows} == {1.0}
    skipped = _csv(tmp_path / "skipped.csv")
    assert [(s["case"], s["class"], s["reason"]) for s in skipped] == [
        ("case_1", "box", "empty ground truth")
    ]
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary["n_targets"] == 3 and summary["n_skipped"] == 1
    assert summary["overall"]["1"]["dice"]["mean"] == 1.0
    assert summary["overall"]["3"]["dice"]["std"] == 0.0
    assert summary["config"]["run.uses_gt"] is True
    assert (tmp_path / "dice_vs_clicks.png").stat().st_size > 1000
    assert result.summary == summary


def test_wrong_method_has_known_dice(targets: list, tmp_path: Path) -> None:
    evaluate_targets(HalfMethod(), targets, tmp_path, CFG, show_progress=False)
    rows = read_rows(tmp_path / "per_click.csv")
    box = [r for r in rows if r["class"] == "box"]
    assert len(box) == 3
    for r in box:  # half of a 10-voxel-long box: Dice 2/3, IoU 1/2
        assert r["dice"] == pytest.approx(2 / 3)
        assert r["iou"] == pytest.approx(1 / 2)
        assert 0 < r["nsd"] < 1
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary["per_class"]["box"]["3"]["dice"]["mean"] == pytest.approx(2 / 3)


def test_clicks_follow_the_protocol(targets: list, tmp_path: Path) -> None:
    rec = RecordingMethod()
    cfg = EvalConfig(clicks=(1, 4), strategy=("center", "random"), roi="gt", seed=3)
    evaluate_targets(rec, targets[:1], tmp_path, cfg, show_progress=False)
    image, label = make_case(0)
    gt = label == 1
    kinds = [c[0] for c in rec.calls]
    assert kinds == ["set_image", "start_target"] + ["add_click"] * 4
    assert rec.calls[0][1] == ((40, 36, 24), "CT")  # modality from dataset.json
    assert np.array_equal(rec.calls[1][1], gt)  # roi="gt": the ROI is placed on the GT box
    clicks = [c[1] for c in rec.calls[2:]]
    assert isinstance(clicks[0], Click) and clicks[0].positive and gt[clicks[0].coord]
    prev = [np.zeros_like(gt)] + rec.outputs[:-1]
    for click, before in zip(clicks, prev, strict=True):
        fn, fp = gt & ~before, before & ~gt
        assert fn[click.coord] or fp[click.coord]
        assert click.positive == bool(fn[click.coord])
    rows = read_rows(tmp_path / "per_click.csv")
    assert [r["strategy"] for r in rows] == ["center", "random", "random", "random"]
    assert [(r["coord_i"], r["coord_j"], r["coord_k"]) for r in rows] == [c.coord for c in clicks]
    # the metric of each row is the metric of what the method returned
    for r, out in zip(rows, rec.outputs, strict=True):
        assert r["dice"] == pytest.approx(2 * (out & gt).sum() / (out.sum() + gt.sum()))
    # and so is whether that mask agrees with the click
    for r, out, click in zip(rows, rec.outputs, clicks, strict=True):
        assert r["click_honoured"] is (bool(out[click.coord]) == click.positive)


def test_masks_that_miss_their_click_are_counted(targets: list, tmp_path: Path) -> None:
    class Empty(OracleMethod):
        name = "empty"

        def add_click(self, click: Click) -> np.ndarray:
            assert self.gt is not None
            return np.zeros(self.gt.shape, bool)

    cfg = EvalConfig(clicks=(1, 3), seed=7)
    oracle = evaluate_targets(
        OracleMethod(), targets, tmp_path / "oracle", cfg, show_progress=False
    )
    empty = evaluate_targets(Empty(), targets, tmp_path / "empty", cfg, show_progress=False)
    assert oracle.summary is not None and empty.summary is not None
    # every click of an empty mask is positive (the whole target is missed) and not honoured
    assert empty.summary["click_honoured"]["overall"]["1"] == {
        "honoured": 0,
        "recorded": 3,
        "share": 0.0,
    }
    assert empty.summary["click_honoured"]["per_class"]["box"]["3"]["share"] == 0.0
    assert oracle.summary["click_honoured"]["overall"]["3"]["share"] == 1.0
    assert oracle.summary["dice_falls"]["overall"] == {"clicks": 6, "falls": 0, "share": 0.0}


def test_a_part_file_of_an_older_version_is_resumed(targets: list, tmp_path: Path) -> None:
    """Parts written before the ``click_honoured`` column keep their rows, aligned."""
    cfg = EvalConfig(clicks=(1, 3), seed=5)
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    evaluate_targets(RecordingMethod(), targets, ref_dir, cfg, show_progress=False)
    evaluate_targets(RecordingMethod(), targets[:2], run_dir, cfg, show_progress=False)
    part = run_dir / "parts" / "per_click.shard0of1.csv"
    old = _csv(part)
    with open(part, "w", newline="") as f:
        fields = [k for k in old[0] if k != "click_honoured"]
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(old)
    res = evaluate_targets(RecordingMethod(), targets, run_dir, cfg, show_progress=False)
    assert res.resumed == 2 and res.evaluated + res.skipped == 2
    merged, ref = _without_time(run_dir / "per_click.csv"), _without_time(ref_dir / "per_click.csv")
    n_old = len(old)
    assert [r["click_honoured"] for r in merged[:n_old]] == [""] * n_old  # not recorded
    assert merged[n_old:] == ref[n_old:]
    for r in (*merged, *ref):
        r.pop("click_honoured")
    assert merged == ref
    new_targets = {(r["case"], r["class"]) for r in ref[n_old:]}
    assert res.summary is not None and len(new_targets) >= 1
    assert res.summary["click_honoured"]["overall"]["1"]["recorded"] == len(new_targets)


def test_roi_click_mode_passes_no_centre(targets: list, tmp_path: Path) -> None:
    rec = RecordingMethod()
    cfg = EvalConfig(clicks=(1,), roi="click")
    evaluate_targets(rec, targets[:1], tmp_path, cfg, show_progress=False)
    assert ("start_target", None) in rec.calls


def test_csv_and_summary_agree(targets: list, tmp_path: Path) -> None:
    cfg = EvalConfig(clicks=(1, 2, 3), strategy=("random",), seed=1, metrics=("dice", "nsd", "iou"))
    evaluate_targets(RecordingMethod(radius=3), targets, tmp_path, cfg, show_progress=False)
    rows = _csv(tmp_path / "per_click.csv")
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    for k in ("1", "2", "3"):
        for metric in ("dice", "nsd", "iou"):
            vals = np.array([float(r[metric]) for r in rows if r["click"] == k])
            assert summary["overall"][k][metric]["mean"] == pytest.approx(vals.mean(), abs=1e-6)
            assert summary["overall"][k][metric]["std"] == pytest.approx(vals.std(), abs=1e-6)
            assert summary["overall"][k][metric]["n"] == len(vals) == 3
        for cls in ("ball", "box"):
            vals = np.array(
                [float(r["dice"]) for r in rows if r["click"] == k and r["class"] == cls]
            )
            assert summary["per_class"][cls][k]["dice"]["mean"] == pytest.approx(vals.mean(), 1e-6)
    assert len({float(r["dice"]) for r in rows}) > 3  # not a constant method


def test_resume_skips_finished_and_redoes_partial(targets: list, tmp_path: Path) -> None:
    cfg = EvalConfig(clicks=(1, 3), seed=5)
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    evaluate_targets(RecordingMethod(), targets, ref_dir, cfg, show_progress=False)
    evaluate_targets(RecordingMethod(), targets, run_dir, cfg, show_progress=False)
    again = evaluate_targets(RecordingMethod(), targets, run_dir, cfg, show_progress=False)
    # the target skipped in the first call (case_1 has no box) is counted apart from the
    # evaluated ones, as the summary counts it
    assert (again.evaluated, again.resumed, again.resumed_skipped) == (0, 3, 1)
    # simulate a crash in the middle of the last target: drop its last rows
    part = run_dir / "parts" / "per_click.shard0of1.csv"
    lines = part.read_text(encoding="utf-8").splitlines(keepends=True)
    part.write_text("".join(lines[:-2]) + lines[-2][:10])
    rec = RecordingMethod()
    third = evaluate_targets(rec, targets, run_dir, cfg, show_progress=False)
    assert (third.evaluated, third.resumed, third.resumed_skipped) == (1, 2, 1)
    assert _without_time(run_dir / "per_click.csv") == _without_time(ref_dir / "per_click.csv")


def test_settings_change_is_refused_unless_overwrite(targets: list, tmp_path: Path) -> None:
    evaluate_targets(OracleMethod(), targets[:1], tmp_path, CFG, show_progress=False)
    other = EvalConfig(clicks=(1, 3), strategy=("center",), seed=7)
    with pytest.raises(ValueError, match="strategy") as refused:
        evaluate_targets(OracleMethod(), targets[:1], tmp_path, other, show_progress=False)
    # the API's advice names its keywords; the command line's, its options
    assert str(refused.value).endswith("; use another output_dir or pass overwrite=True")
    assert cli_wording(refused.value).endswith("; use another --output or --overwrite")
    res = evaluate_targets(
        OracleMethod(), targets[:1], tmp_path, other, show_progress=False, overwrite=True
    )
    assert res.evaluated == 1
    # more clicks than before: finished targets are redone, fewer clicks: reused
    more = EvalConfig(clicks=(1, 5), strategy=("center",), seed=7)
    assert (
        evaluate_targets(OracleMethod(), targets[:1], tmp_path, more, show_progress=False).evaluated
        == 1
    )
    fewer = EvalConfig(clicks=(2,), strategy=("center",), seed=7)
    res = evaluate_targets(OracleMethod(), targets[:1], tmp_path, fewer, show_progress=False)
    assert res.evaluated == 0 and list(res.summary["overall"]) == ["2"]


def test_merge_reports_counts_beyond_the_last_run_from_the_rows_there(
    targets: list, tmp_path: Path
) -> None:
    """A run with fewer clicks after one with more keeps the longer rows: merge reports the
    larger counts from them; counts no evaluated target reached are a one-line error."""
    evaluate_targets(RecordingMethod(), targets, tmp_path, EvalConfig(clicks=(1, 5), seed=5),
                     show_progress=False)  # fmt: skip
    full = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    short = evaluate_targets(
        RecordingMethod(), targets, tmp_path, EvalConfig(clicks=(1, 3), seed=5), show_progress=False
    )
    assert short.summary is not None and "5" not in short.summary["overall"]
    short_rows = _without_time(tmp_path / "per_click.csv")
    merged = merge_results(tmp_path, clicks=(1, 5))
    assert merged["overall"]["5"]["dice"] == full["overall"]["5"]["dice"]
    assert merged["overall"]["5"]["dice"]["n"] == 3
    assert merged["config"]["clicks"] == [1, 5] and merged["dice_falls"] == full["dice_falls"]
    # fewer clicks than the rows hold: the files a run with those clicks writes
    again = merge_results(tmp_path, clicks=(1, 3))
    assert _without_time(tmp_path / "per_click.csv") == short_rows
    assert again["dice_falls"] == short.summary["dice_falls"]
    with pytest.raises(ValueError, match=r"3 of the 3 evaluated targets .* click 5 only, not 6"):
        merge_results(tmp_path, clicks=(6,))


def test_shards_merge_to_the_single_run(targets: list, tmp_path: Path) -> None:
    cfg = EvalConfig(clicks=(1, 2), seed=9)
    single = tmp_path / "single"
    evaluate_targets(RecordingMethod(), targets, single, cfg, show_progress=False)
    sharded = tmp_path / "sharded"
    first = evaluate_targets(
        RecordingMethod(), targets, sharded, cfg, shard=(1, 2), show_progress=False
    )
    assert first.summary is None and not (sharded / "summary.json").exists()
    second = evaluate_targets(
        RecordingMethod(), targets, sharded, cfg, shard=(0, 2), show_progress=False
    )
    assert second.summary is not None
    assert first.evaluated + first.skipped + second.evaluated + second.skipped == 4
    assert _without_time(sharded / "per_click.csv") == _without_time(single / "per_click.csv")
    assert (sharded / "skipped.csv").read_text(encoding="utf-8") == (
        single / "skipped.csv"
    ).read_text(encoding="utf-8")
    # merge can be rerun on its own
    assert merge_results(sharded)["overall"] == second.summary["overall"]


def test_a_method_failure_is_scored_as_a_miss_not_skipped(targets: list, tmp_path: Path) -> None:
    class WrongShape(OracleMethod):
        name = "wrong_shape"

        def add_click(self, click: Click) -> np.ndarray:
            return np.zeros((3, 3, 3), bool)

    cfg = EvalConfig(clicks=(1, 3), seed=7, metrics=("dice", "hd95"))
    res = evaluate_targets(WrongShape(), targets[:1], tmp_path, cfg, show_progress=False)
    assert res.evaluated == 1 and res.skipped == 0 and res.failed == 1
    assert "expected the native shape" in _csv(tmp_path / "failed.csv")[0]["reason"]
    rows = _csv(tmp_path / "per_click.csv")
    assert [r["dice"] for r in rows] == ["0.0"] * 3
    diagonal = math.dist((0, 0, 0), np.multiply((40, 36, 24), (1.0, 1.25, 2.0)))
    assert all(float(r["hd95"]) == pytest.approx(diagonal) for r in rows)
    assert res.summary is not None and res.summary["n_failed"] == 1


def test_image_label_grid_mismatch_is_skipped(tmp_path: Path) -> None:
    root = make_nnunet_dataset(tmp_path / "Dataset002_Bad", n_cases=1)
    lab = read_volume(root / "labelsTr" / "case_0.nii.gz")
    from sammed3d.io import write_volume

    write_volume(
        Volume(lab.array, (2.0, 2.0, 2.0), lab.origin), root / "labelsTr" / "case_0.nii.gz"
    )
    targets = iter_targets(discover_dataset(root))
    res = evaluate_targets(OracleMethod(), targets, tmp_path / "out", CFG, show_progress=False)
    assert res.skipped == 2 and "spacing" in res.skipped_reasons[0]


def test_config_validation_and_shards() -> None:
    assert EvalConfig(clicks=(5, 1, 3, 3)).clicks == (1, 3, 5)
    assert EvalConfig(strategy="center").strategy == ("center",)  # type: ignore[arg-type]
    cfg = EvalConfig(strategy=("center", "center", "random"))
    assert [cfg.strategy_for(k) for k in (1, 2, 3, 9)] == ["center", "center", "random", "random"]
    for bad in (
        {"clicks": (0,)},
        {"strategy": ("ritm",)},
        {"roi": "box"},
        {"metrics": ("nsd",)},
        {"tolerance_mm": -1.0},
    ):
        with pytest.raises(ValueError):
            EvalConfig(**bad)  # type: ignore[arg-type]
    assert parse_shard("1/4") == (1, 4)
    for bad_shard in ("4/4", "a/b", "1/0"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad_shard)
    assert shard_from_env({"RANK": "2", "WORLD_SIZE": "3"}) == (2, 3)
    assert shard_from_env({}) == (0, 1)


def test_one_missing_value_convention_in_parts_and_merged_csv(
    targets: list, tmp_path: Path
) -> None:
    class FailsAtClick2(OracleMethod):
        name = "fails_at_2"

        def start_target(self, *, roi_mask, gt) -> None:
            super().start_target(roi_mask=roi_mask, gt=gt)
            self.n = 0

        def add_click(self, click: Click) -> np.ndarray:
            self.n += 1
            if self.n == 2:
                raise ValueError("gave up")
            return super().add_click(click)

    cfg = EvalConfig(clicks=(1, 3), seed=7)  # hd95 not asked for: not computed
    evaluate_targets(FailsAtClick2(), targets[:1], tmp_path, cfg, show_progress=False)
    part = (tmp_path / "parts" / "per_click.shard0of1.csv").read_text(encoding="utf-8")
    merged = (tmp_path / "per_click.csv").read_text(encoding="utf-8")
    assert part == merged  # merging never turns one kind of missing value into another
    rows = _csv(tmp_path / "per_click.csv")
    assert {r["hd95"] for r in rows} == {""}  # not computed: empty
    assert [r["seconds"] == "nan" for r in rows] == [False, True, True]  # undefined: nan
    assert [r["dice"] for r in rows] == ["1.0", "0.0", "0.0"]
    # and a rebuild from the parts alone writes the same text
    merge_results(tmp_path)
    assert (tmp_path / "per_click.csv").read_text(encoding="utf-8") == merged


def test_a_label_file_that_is_not_a_label_map_is_skipped_with_the_reason(tmp_path: Path) -> None:
    root = make_nnunet_dataset(tmp_path / "Dataset007_Soft", n_cases=1)
    path = root / "labelsTr" / "case_0.nii.gz"
    lab = read_volume(path)
    from sammed3d.io import write_volume

    write_volume(lab.with_array(lab.array.astype(np.float32) * 0.5), path)  # 0.5, 1.0
    targets = iter_targets(discover_dataset(root))
    res = evaluate_targets(OracleMethod(), targets, tmp_path / "out", CFG, show_progress=False)
    assert res.evaluated == 0 and res.skipped == 2
    assert "not a label map" in res.skipped_reasons[0]


def test_a_case_whose_image_is_a_picture_is_skipped_saying_so(tmp_path: Path) -> None:
    from tests.volumes import write_not_volume

    root = make_nnunet_dataset(tmp_path / "Dataset008_Png", n_cases=1)
    write_not_volume("jpg", root / "imagesTr" / "case_0_0000.nii.gz")
    targets = iter_targets(discover_dataset(root))
    res = evaluate_targets(OracleMethod(), targets, tmp_path / "out", CFG, show_progress=False)
    assert res.evaluated == 0 and res.skipped == 2
    assert (
        "case_0_0000.nii.gz: it is a JPEG image, not gzip-compressed NIfTI"
        in (res.skipped_reasons[0])
    )


def test_a_resume_mismatch_names_the_setting_as_evaluate_spells_it():
    from sammed3d.evaluation.evaluator import _setting_name

    assert _setting_name("tolerance_mm") == "--tolerance-mm"
    assert _setting_name("run.checkpoint") == "--checkpoint"
    assert _setting_name("run.uses_gt") == "--method"
    assert _setting_name("run.params").startswith("the model's settings")


def test_a_refused_resume_names_the_model_setting_that_differs() -> None:
    from sammed3d.evaluation.evaluator import _setting_diff

    there = {"zoom_spacing": 1.0, "click_bounds": "negative", "rim_edit": 3.0}
    now = {"zoom_spacing": 1.0, "click_bounds": "none", "rim_edit": 3.0}
    assert _setting_diff("run.params", there, now) == (
        "the model's setting click_bounds: 'negative' there, 'none' now"
    )
    now["rim_edit"] = 0.0
    assert _setting_diff("run.params", there, now).endswith("'none' now; 1 more differ")
    assert _setting_diff("strategy", ["center"], ["random"]) == (
        "--strategy: ['center'] there, ['random'] now"
    )


def test_a_label_value_nobody_declared_is_warned_about(tmp_path: Path, caplog) -> None:
    """2026-12-03 trial: a label file holding value 7 (dataset.json declares 1 and 2) was
    evaluated without a word, while prepare and semantic training refuse it."""
    import logging

    from sammed3d.data.layout import undeclared_values
    from sammed3d.io import write_volume

    root = make_nnunet_dataset(tmp_path / "Dataset002_Odd")
    path = root / "labelsTr" / "case_0.nii.gz"
    label = read_volume(path)
    array = np.asarray(label.array).copy()
    array[0, 0, :3] = 7
    write_volume(label.with_array(array), path)
    targets = iter_targets(discover_dataset(root, split="train"))
    assert {t.declared_values for t in targets} == {(1, 2)}
    with caplog.at_level(logging.WARNING, logger="sammed3d.evaluation"):
        evaluate_targets(OracleMethod(), targets, tmp_path / "out", CFG, show_progress=False)
    assert (
        "case case_0: case_0.nii.gz holds label value(s) 7 that its dataset.json does not "
        "declare: not evaluated (a wrong label file?)" in caplog.text
    )
    assert "case_1" not in caplog.text
    assert undeclared_values(array, (1, 2)) == [7]
    assert undeclared_values(array.astype(np.float32), (1, 2, 7)) == []
    assert undeclared_values(array > 0, ()) == [1]


def test_a_method_names_its_model_apart_from_the_method(
    targets: list, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``run.method`` is the kind of method; a method's ``model_name`` is recorded as
    ``run.model`` and names the run in its progress bar; a run written before the field
    existed resumes (the model is identified by its checkpoint's hash)."""
    from sammed3d.evaluation.evaluator import run_name

    class NamedOracle(OracleMethod):
        model_name = "sam_med3d_demo"

    evaluate_targets(OracleMethod(), targets[:1], tmp_path, CFG, show_progress=False)
    res = evaluate_targets(NamedOracle(), targets[:1], tmp_path, CFG)
    assert res.evaluated == 0 and res.resumed == 1  # resumed, nothing redone
    assert "evaluate oracle with sam_med3d_demo: " in capsys.readouterr().err
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary["config"]["run.method"] == "oracle"
    assert summary["config"]["run.model"] == "sam_med3d_demo"
    assert run_name("sam_med3d", "sam_med3d_turbo") == "sam_med3d_turbo"
    assert run_name("sam_med3d_choose_extent", "sam_med3d_demo") == (
        "sam_med3d_choose_extent with sam_med3d_demo"
    )
    assert run_name("region_growing") == "region_growing"


def test_results_are_refused_in_a_folder_of_the_targets(targets: list, dataset: Path) -> None:
    with pytest.raises(ValueError, match="which holds the dataset's images"):
        evaluate_targets(OracleMethod(), targets[:1], dataset / "imagesTr", CFG)
    assert not (dataset / "imagesTr" / "config.json").exists()
