"""``sammed3d evaluate``: outputs, resume, shards + merge, exit codes and one-line errors."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from sammed3d.cli import main
from tests.evaluation.synthetic import make_nnunet_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_nnunet_dataset(tmp_path_factory.mktemp("cli_eval") / "Dataset001_Toy")


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_region_growing_end_to_end(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rg"
    argv = [
        "evaluate",
        "--data",
        str(dataset),
        "--method",
        "region-growing",
        "--clicks",
        "1,3",
        "--strategy",
        "center",
        "--output",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Dice (3 targets, 1 skipped)" in printed
    rows = _rows(out / "per_click.csv")
    assert len(rows) == 9
    assert {r["strategy"] for r in rows} == {"center"}
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["config"]["run.method"] == "region_growing"
    assert summary["config"]["strategy"] == ["center"]
    assert list(summary["overall"]) == ["1", "3"]
    assert summary["overall"]["3"]["dice"]["mean"] > 0.9
    assert (out / "dice_vs_clicks.png").exists()
    # resume: nothing left to do, same summary
    assert main(argv) == 0
    assert (
        json.loads((out / "summary.json").read_text(encoding="utf-8"))["overall"]
        == summary["overall"]
    )
    # other settings in the same folder: refused with a one-line error
    bad = [a if a != "center" else "random" for a in argv]
    capsys.readouterr()
    assert main(bad) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    assert "(--strategy: ['center'] there, ['random'] now)" in err  # the option, as typed


def test_shards_and_merge(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sharded"
    base = ["evaluate", "--data", str(dataset), "--method", "region-growing", "--clicks", "1,2"]
    base += ["--output", str(out), "--no-progress"]
    assert main([*base, "--shard", "0/2"]) == 0
    assert "results are merged by the last shard" in capsys.readouterr().out
    assert not (out / "summary.json").exists()
    assert main([*base, "--shard", "1/2"]) == 0
    assert (out / "summary.json").exists()
    assert len(_rows(out / "per_click.csv")) == 3 * 2
    (out / "summary.json").unlink()
    assert main(["evaluate", "--merge", "--output", str(out), "--clicks", "2"]) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert list(summary["overall"]) == ["2"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "sam-med3d", "--checkpoint", "missing.pth"], "checkpoint not found"),
        (["--method", "region-growing", "--strategy", "ritm"], "strategy"),
        (["--method", "region-growing", "--metrics", "dice,dsc"], "metrics"),
        (["--method", "region-growing", "--classes", "liver"], "unknown class"),
        (["--method", "region-growing", "--shard", "2/2"], "shard"),
        (["--method", "region-growing", "--checkpoint", "x.pth"], "--checkpoint only applies to"),
        (["--method", "region-growing", "--zoom-spacing", "1"], "--zoom-spacing only applies to"),
        (["--method", "sam-med3d", "--zoom-spacing", "-2"], "--zoom-spacing must be 0 (off)"),
        (["--method", "region-growing", "--choose-extent"], "--choose-extent only applies to"),
        (["--method", "region-growing", "--refine-boundary", "3"], "--refine-boundary only"),
        (["--method", "sam-med3d", "--refine-boundary", "inf"], "--refine-boundary must be 0"),
        (["--method", "region-growing", "--contrast-guard", "0.4"], "--contrast-guard only"),
        (["--method", "sam-med3d", "--contrast-guard", "nan"], "--contrast-guard must be 0"),
        (["--method", "region-growing", "--first-pick", "edges"], "--first-pick only applies"),
        (["--method", "region-growing", "--later-check", "none"], "--later-check only applies"),
        (
            ["--method", "region-growing", "--rim-edit", "3", "--no-extend"],
            "--no-extend, --rim-edit only apply to --method sam-med3d, not region-growing",
        ),
        (["--method", "sam-med3d", "--rim-edit", "-3"], "--rim-edit must be 0 (off)"),
        (
            ["--method", "region-growing", "--click-bounds", "negative"],
            "--click-bounds only applies to --method sam-med3d",
        ),
    ],
)
def test_bad_arguments_exit_2(
    dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    argv = ["evaluate", "--data", str(dataset), "--output", str(tmp_path / "o"), "--no-progress"]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


@pytest.mark.parametrize(
    ("extra", "flag", "came"),
    [
        (["--strategy", "foo"], "--strategy", "got foo"),
        (["--strategy", "center,foo"], "--strategy", "got center,foo"),
        (["--metrics", "dice,foo"], "--metrics", "got dice,foo"),
        (["--metrics", "iou,nsd"], "--metrics", "includes dice, got iou,nsd"),
        (["--tolerance-mm", "-1"], "--tolerance-mm", "got -1.0"),
        (["--tolerance-mm", "nan"], "--tolerance-mm", "got nan"),
        (["--seed", "-1"], "--seed", "got -1"),
        (["--clicks", "1,2000"], "--clicks", "got 2000"),
        (["--shard", "2/2"], "--shard", "got '2/2'"),
        (["--shard", "two"], "--shard", "got 'two'"),
        (["--limit", "0"], "--limit", "got 0"),
        (["--classes", "liver"], "--classes", "unknown class(es) liver"),
    ],
)
def test_bad_values_name_the_flag(
    dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    flag: str,
    came: str,
) -> None:
    """Errors name the option as typed (``--tolerance-mm``), not EvalConfig's field."""
    argv = ["evaluate", "--data", str(dataset), "--output", str(tmp_path / "o"), "--no-progress"]
    assert main([*argv, "--method", "region-growing", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag}: expected ") and came in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "config.json").exists()  # refused before any work


def test_missing_data_names_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["evaluate", "--data", str(tmp_path / "nope"), "--output", str(tmp_path / "o")]
    assert main([*argv, "--method", "region-growing"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --data: expected a dataset folder") and "nope" in err


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--clicks", "1,,"),
        ("--clicks", "1,3,"),
        ("--clicks", ","),
        ("--strategy", "center,,random"),
        ("--metrics", "dice,"),
        ("--classes", ",liver"),
        ("--classes", "liver, ,kidney"),
    ],
)
def test_empty_items_in_comma_lists_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    argv = ["evaluate", "--data", str(tmp_path), "--output", str(tmp_path / "o"), flag, value]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: expected a comma-separated list" in err and repr(value) in err
    assert len(err.strip().splitlines()) == 1


def test_choose_extent_needs_a_multimask_model(
    dataset: Path, tmp_path: Path, small_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["evaluate", "--data", str(dataset), "--output", str(tmp_path / "o"), "--no-progress"]
    argv += ["--checkpoint", str(small_checkpoint), "--choose-extent"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "one mask per click" in err and "\n" not in err


def test_missing_data_and_bad_clicks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["evaluate", "--output", str(tmp_path / "o"), "--method", "region-growing"]
    assert main([*argv, "--data", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(argv) == 2
    assert "--data is required" in capsys.readouterr().err
    assert main(["evaluate", "--merge", "--output", str(tmp_path / "empty")]) == 2
    assert "config.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--data", str(tmp_path), "--clicks", "0,3"])
    assert exc.value.code == 2


def test_option_defaults_come_from_eval_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One source of truth: the parser's defaults are EvalConfig's, and follow it."""
    import dataclasses

    from sammed3d.cli import build_parser
    from sammed3d.cli.evaluate import eval_config
    from sammed3d.evaluation.config import EvalConfig

    args = build_parser(["evaluate"]).parse_args(["evaluate", "-o", "out"])
    assert eval_config(args) == EvalConfig()
    fields = {f.name: f for f in dataclasses.fields(EvalConfig)}
    for name in ("strategy", "roi", "seed", "tolerance_mm", "metrics"):
        value = getattr(args, name)
        assert (tuple(value) if isinstance(value, list) else value) == fields[name].default, name
    assert args.clicks is None  # not given: EvalConfig's (and --merge keeps the run's own)

    monkeypatch.setattr(fields["seed"], "default", 7)
    monkeypatch.setattr(fields["clicks"], "default", (2, 4))
    assert build_parser(["evaluate"]).parse_args(["evaluate", "-o", "out"]).seed == 7
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "(default 2,4;" in capsys.readouterr().out


def test_help_loads_neither_torch_nor_numpy() -> None:
    from tests.conftest import run_fresh_python

    out = run_fresh_python(
        "import json, sys\n"
        "from sammed3d.cli import main\n"
        "try:\n"
        "    code = main(['evaluate', '--help'])\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "print(json.dumps([code, [m for m in ('torch', 'numpy') if m in sys.modules]]))\n"
    )
    assert out == [0, []]


def test_a_foreign_config_json_is_bad_input(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config.json that evaluate did not write is a one-line error (it was a TypeError)."""
    out = tmp_path / "o"
    out.mkdir()
    for text in ("[1, 2]", '{"identity": {}, "clicks": [1], "config": 5}', "{"):
        (out / "config.json").write_text(text)
        assert main(["evaluate", "--merge", "--output", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "is not an evaluation config" in err, err
        assert "\n" not in err
    argv = ["evaluate", "--data", str(dataset), "--method", "region-growing", "--clicks", "1"]
    assert main([*argv, "--output", str(out), "--no-progress"]) == 2  # resuming into it
    err = capsys.readouterr().err.strip()
    assert "is not an evaluation config" in err and err.endswith("use --overwrite")
    assert main([*argv, "--output", str(out), "--no-progress", "--overwrite"]) == 0


def test_a_programming_error_is_a_traceback_not_bad_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TypeError is not an expected user error: the CLI does not hide it as ``error: ...``."""
    from sammed3d.cli import EXPECTED_ERRORS
    from sammed3d.evaluation import evaluator

    assert not any(issubclass(TypeError, e) for e in EXPECTED_ERRORS)

    def broken(*args: object, **kwargs: object) -> None:
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    monkeypatch.setattr(evaluator, "merge_results", broken)
    with pytest.raises(TypeError, match="unsupported operand"):
        main(["evaluate", "--merge", "--output", str(tmp_path), "--no-progress"])


def test_a_resume_compares_the_model_file_however_it_was_named(
    dataset: Path,
    tmp_path: Path,
    tiny_model,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The checkpoint's content decides a resume, whether it came from --checkpoint,
    $SAMMED3D_CHECKPOINT or the default: another model from the environment is refused (it
    used to resume silently), a copy of the same file elsewhere is the same model."""
    import shutil

    import torch

    from sammed3d import paths, save_checkpoint

    first = save_checkpoint(tiny_model, tmp_path / "a.pth")
    copy = shutil.copy(first, tmp_path / "copy_of_a.pth")
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    key = next(k for k in state if k.startswith("mask_decoder.") and state[k].is_floating_point())
    state[key] = state[key] * 0.5
    perturbed = tmp_path / "b.pth"
    torch.save({"model_state_dict": state}, perturbed)
    out = tmp_path / "ev"
    argv = ["evaluate", "--data", str(dataset), "--clicks", "1", "-o", str(out), "--no-progress"]
    assert main([*argv, "--checkpoint", str(first)]) == 0
    saved = json.loads((out / "config.json").read_text(encoding="utf-8"))["identity"]
    assert (
        saved["run.checkpoint"] == str(first.resolve())
        and len(saved["run.checkpoint_sha256"]) == 64
    )
    capsys.readouterr()
    monkeypatch.setenv(paths.ENV_CHECKPOINT, str(perturbed))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        f"error: {out} holds results made with other settings (--checkpoint (the file's sha256): "
    )
    assert "\n" not in err
    monkeypatch.setenv(paths.ENV_CHECKPOINT, str(copy))
    assert main(argv) == 0  # the same model under another path: resumed, nothing redone
    assert "0 evaluated, 3 already done" in capsys.readouterr().err


def test_merge_beyond_the_simulated_clicks_is_a_one_line_error(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rg"
    argv = ["evaluate", "--data", str(dataset), "--method", "region-growing", "--clicks", "1,2"]
    assert main([*argv, "-o", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--merge", "-o", str(out), "--clicks", "1,4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: 3 of the 3 evaluated targets") and "\n" not in err
    assert "up to click 2 only, not 4" in err


def test_results_are_not_written_among_the_dataset_files(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """-o the dataset folder or its imagesTr/labelsTr wrote the results among the images;
    refused before any work, one line. A folder of their own inside the dataset is fine."""
    before = sorted(p.relative_to(dataset) for p in dataset.rglob("*"))
    argv = ["evaluate", "--data", str(dataset), "--method", "region-growing", "--clicks", "1"]
    expected = "error: output: expected a folder of its own for the results, got "
    for folder, reason in (
        (dataset, "the dataset folder itself"),
        (dataset / "imagesTr", "which holds the dataset's images (e.g. case_0_0000.nii.gz)"),
        (dataset / "labelsTr", "which holds the dataset's labels (e.g. case_0.nii.gz)"),
    ):
        assert main([*argv, "-o", str(folder), "--no-progress"]) == 2
        assert capsys.readouterr().err == f"{expected}{folder}, {reason}\n"
    assert sorted(p.relative_to(dataset) for p in dataset.rglob("*")) == before
    copy = tmp_path / "Dataset001_Toy"
    shutil.copytree(dataset, copy)
    assert main([*argv[:2], str(copy), *argv[3:], "-o", str(copy / "eval"), "--no-progress"]) == 0
    assert (copy / "eval" / "summary.json").exists()


def test_roi_gt_with_a_zooming_model_says_the_zoom_does_not_run(
    dataset: Path,
    tmp_path: Path,
    tiny_model,  # noqa: ANN001
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A trial's small lesion: 0.0006 under the default --roi gt, 0.917 with --roi click
    (the bundled model zooms in on a small object only where the ROI is its own)."""
    from sammed3d import save_checkpoint

    ckpt = save_checkpoint(tiny_model, tmp_path / "t.pth")
    base = ["evaluate", "--data", str(dataset), "--clicks", "1", "--limit", "1", "--no-progress"]
    base += ["--checkpoint", str(ckpt)]
    note = (
        "note: --roi gt centres the ROI on each target's box (the published protocol), where "
        "this model's zoom-in for small objects (1 mm) does not run; --roi click places it on "
        "the first click, as segment and serve do"
    )
    assert main([*base, "--zoom-spacing", "1", "-o", str(tmp_path / "a")]) == 0
    assert note in capsys.readouterr().err.splitlines()
    argv = [*base, "--zoom-spacing", "1", "--roi", "click", "-o", str(tmp_path / "b")]
    assert main(argv) == 0
    assert "note: --roi gt" not in capsys.readouterr().err
    assert main([*base, "-o", str(tmp_path / "c")]) == 0  # a model that does not zoom
    assert "note: --roi gt" not in capsys.readouterr().err
