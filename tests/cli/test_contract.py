"""The contract every command follows: devices, exit codes, outputs, corrupt input, umask.

Each test covers the kind across commands, not one command: a new command that writes files
or takes ``--device`` belongs in the parametrisations here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from sammed3d import build_model, save_checkpoint
from sammed3d.cli import EXIT_CODES, main
from sammed3d.io import Volume, read_volume, write_volume
from tests.evaluation.synthetic import make_nnunet_dataset
from tests.training.conftest import write_nnunet_dataset
from tests.volumes import image_array

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(build_model("sam_med3d_tiny"), tmp_path_factory.mktemp("c") / "t.pth")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    vol = Volume(image_array((20, 18, 12)), (1.5, 1.5, 2.0), (3.0, -4.0, 5.0))
    return write_volume(vol, tmp_path_factory.mktemp("img") / "ct.nii.gz")


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_nnunet_dataset(tmp_path_factory.mktemp("ev") / "Dataset001_Toy", n_cases=1)


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    lines = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.startswith("error")]
    assert len(lines) == 1, lines
    return lines[0]


def _device_commands(tmp: Path, ckpt: Path, image: Path, data: Path) -> dict[str, list[str]]:
    return {
        "segment": ["segment", str(image), "-p", "5", "5", "5", "--checkpoint", str(ckpt),
                    "-o", str(tmp / "m.nii.gz")],
        "demo": ["demo", "--checkpoint", str(ckpt), "-o", str(tmp / "demo"),
                 "--structures", "lateral_ventricles", "--clicks", "1"],
        "evaluate": ["evaluate", "--data", str(data), "--checkpoint", str(ckpt),
                     "--output", str(tmp / "ev"), "--clicks", "1"],
        "evaluate-rg": ["evaluate", "--data", str(data), "--method", "region-growing",
                        "--output", str(tmp / "rg"), "--clicks", "1"],
        "train": ["train", "--config", "tiny_cpu", "-o", str(tmp / "run"),
                  f"data.roots=[{data}]"],
    }  # fmt: skip


@pytest.mark.parametrize("command", ["segment", "demo", "evaluate", "evaluate-rg", "train"])
@pytest.mark.parametrize(
    ("device", "match"),
    [("tpu", "unknown device 'tpu'"), ("cuda:banana", "unknown device"), ("cuda", "cuda")],
)
def test_one_device_resolver_for_every_command(
    tmp_path, ckpt, image, eval_data, capsys, command, device, match
):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    argv = _device_commands(tmp_path, ckpt, image, eval_data)[command]
    if command == "train":
        if device != "cuda":
            pytest.skip("train.device is a typed config key: the config check names it")
        argv += ["train.device=cuda"]
    else:
        argv += ["--device", device]
    assert main(argv) == 2
    err = _err(capsys)
    assert match in err and "Traceback" not in err
    if device == "cuda":
        assert "cpu" in err  # says what to use instead
    assert not (tmp_path / "demo").exists()  # no empty output folder left behind
    assert not (tmp_path / "m.nii.gz").exists()


def test_exit_codes_are_documented_in_one_table() -> None:
    text = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `?(\d+)`? \| (.+?) \|$", text, flags=re.M))
    assert {int(k) for k in rows} == set(EXIT_CODES)


def test_prepare_where_every_case_fails_exits_1(tmp_path, capsys):
    src = make_nnunet_dataset(tmp_path / "Dataset002_Broken", n_cases=2)
    for label in (src / "labelsTr").iterdir():
        raw = label.read_bytes()
        label.write_bytes(raw[: len(raw) // 2])  # truncated: must not become "empty"
    assert main(["prepare", str(src), "-o", str(tmp_path / "out"), "--no-histograms"]) == 1
    err = _err(capsys)
    assert "every case failed" in err
    manifest = (tmp_path / "out" / "manifest.jsonl").read_text(encoding="utf-8")
    assert "truncated" in manifest and '"kept"' not in manifest


def test_evaluate_with_no_target_scored_exits_1(tmp_path, capsys):
    src = make_nnunet_dataset(tmp_path / "Dataset003_Empty", n_cases=1)
    lab = read_volume(src / "labelsTr" / "case_0.nii.gz")
    write_volume(lab.with_array(np.zeros_like(lab.array)), src / "labelsTr" / "case_0.nii.gz")
    argv = ["evaluate", "--data", str(src), "--method", "region-growing", "--clicks", "1"]
    assert main([*argv, "--output", str(tmp_path / "ev"), "--no-progress"]) == 1
    assert "no target was scored" in _err(capsys)


def test_a_truncated_file_is_refused_by_every_command(tmp_path, ckpt, capsys):
    """The reader every command uses refuses it: never zero-filled, never "empty"."""
    src = make_nnunet_dataset(tmp_path / "Dataset004_Cut", n_cases=1)
    label = src / "labelsTr" / "case_0.nii.gz"
    intact = read_volume(label)
    raw = label.read_bytes()
    label.write_bytes(raw[: len(raw) // 2])
    image = src / "imagesTr" / "case_0_0000.nii.gz"
    good = write_volume(intact, tmp_path / "good.nii.gz")
    # segment and metrics: exit 2 with the reason
    assert main(["segment", str(label), "-p", "5", "5", "5", "--checkpoint", str(ckpt),
                 "-o", str(tmp_path / "m.nii.gz")]) == 2  # fmt: skip
    assert "truncated" in _err(capsys)
    assert main(["metrics", "--pred", str(good), "--gt", str(label)]) == 2
    assert "truncated" in _err(capsys)
    # evaluate: the case is skipped for its data, not scored as an empty ground truth
    argv = ["evaluate", "--data", str(src), "--method", "region-growing", "--clicks", "1"]
    assert main([*argv, "--output", str(tmp_path / "ev"), "--no-progress"]) == 1
    skipped = (tmp_path / "ev" / "skipped.csv").read_text(encoding="utf-8")
    assert "truncated" in skipped and "empty ground truth" not in skipped
    capsys.readouterr()
    # train: the case is dropped with the reason; nothing is trained on zero-filled data
    run = tmp_path / "run"
    assert main(["train", "--config", "tiny_cpu", "--cache-only", "-o", str(run),
                 f"data.roots=[{src}]", "--no-progress"]) == 2  # fmt: skip
    stats = "".join(p.read_text() for p in (run / "cache").rglob("stats/*.json"))
    assert "truncated" in stats
    assert image.exists()


def test_overwrite_rule_is_the_same_for_every_command(tmp_path, ckpt, image, capsys):
    seg = tmp_path / "seg.nii.gz"
    met = tmp_path / "m.json"
    exp = tmp_path / "e.pth"
    demo = tmp_path / "demo"
    demo.mkdir()
    for path in (seg, met, exp, demo / "demo_labels.nii.gz"):
        path.write_bytes(b"precious")
    labels = write_volume(
        Volume((image_array((20, 18, 12)) > 300).astype(np.uint8), (1.5, 1.5, 2.0)),
        tmp_path / "l.nii.gz",
    )
    commands = {
        seg: ["segment", str(image), "-p", "8", "7", "5", "--checkpoint", str(ckpt),
              "-o", str(seg), "--no-extend"],
        met: ["metrics", "--pred", str(labels), "--gt", str(labels), "--output", str(met)],
        exp: ["export", str(ckpt), str(exp)],
        demo / "demo_labels.nii.gz": ["demo", "--checkpoint", str(ckpt), "-o", str(demo),
                                      "--structures", "lateral_ventricles", "--clicks", "1",
                                      "--no-extend"],
    }  # fmt: skip
    for path, argv in commands.items():
        assert main(argv) == 2, argv[0]
        assert "--overwrite" in _err(capsys)
        assert path.read_bytes() == b"precious", argv[0]
    for path, argv in commands.items():
        assert main([*argv, "--overwrite"]) == 0, argv[0]
        assert path.read_bytes() != b"precious"
    capsys.readouterr()


def _unwritable(tmp: Path) -> Path:
    """A folder nobody can create files in, even root: its 'parent' is a regular file."""
    blocker = tmp / "not_a_folder"
    blocker.write_text("x")
    return blocker / "out"


def test_writability_is_checked_before_the_work_naming_the_users_path(
    tmp_path, image, eval_data, capsys
):
    bad = _unwritable(tmp_path)
    missing_ckpt = str(tmp_path / "no_such.pth")  # would fail later: the output is checked first
    labels = write_volume(Volume(np.ones((4, 4, 4), np.uint8)), tmp_path / "l.nii.gz")
    commands = [
        ["segment", str(image), "-p", "5", "5", "5", "--checkpoint", missing_ckpt,
         "-o", str(bad / "mask.nii.gz")],
        ["metrics", "--pred", str(labels), "--gt", str(labels), "--output", str(bad / "m.json")],
        ["export", str(labels), str(bad / "e.pth")],
        ["demo", "--checkpoint", missing_ckpt, "-o", str(bad)],
        ["evaluate", "--data", str(eval_data), "--checkpoint", missing_ckpt, "--output", str(bad)],
        ["prepare", str(eval_data), "-o", str(bad)],
        ["train", "--config", "tiny_cpu", "-o", str(bad), f"data.roots=[{eval_data}]"],
    ]  # fmt: skip
    for argv in commands:
        assert main(argv) == 2, argv[0]
        err = _err(capsys)
        assert str(bad) in err and "not_a_folder" in err, (argv[0], err)
        assert "checkpoint" not in err.replace("--checkpoint", ""), (argv[0], err)


def test_outputs_of_every_command_follow_the_umask(tmp_path, ckpt, image, eval_data, capsys):
    old = os.umask(0o027)
    try:
        out = tmp_path / "outputs"
        train_data = write_nnunet_dataset(tmp_path / "Dataset005_T", n_cases=1)
        commands = [
            ["segment", str(image), "-p", "8", "7", "5", "--checkpoint", str(ckpt),
             "-o", str(out / "seg.nii.gz"), "--no-extend"],
            ["evaluate", "--data", str(eval_data), "--method", "region-growing", "--clicks",
             "1", "--output", str(out / "ev"), "--no-progress"],
            ["prepare", str(eval_data), "-o", str(out / "prep"), "--no-progress"],
            ["train", "--config", "tiny_cpu", "-o", str(out / "run"), f"data.roots=[{train_data}]",
             "train.epochs=1", "train.batch_size=1", "--no-progress"],
            ["export", str(ckpt), str(out / "e.pth")],
            ["demo", "--checkpoint", str(ckpt), "-o", str(out / "demo"),
             "--structures", "lateral_ventricles", "--clicks", "1", "--no-extend"],
        ]  # fmt: skip
        for argv in commands:
            assert main(argv) == 0, argv[0]
    finally:
        os.umask(old)
    capsys.readouterr()
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "config.yaml" for p in files)
    assert any(p.name == "dice_vs_clicks.png" for p in files)
    wrong = {str(p.relative_to(out)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    wrong = {k: v for k, v in wrong.items() if v != oct(0o640)}
    assert not wrong


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_train_stopped_by_a_signal_checkpoints_and_resumes(
    tmp_path, monkeypatch, capsys, sig, code
):
    """SIGTERM (a scheduler) and a first Ctrl-C both checkpoint, stop and exit 128 + signal."""
    from sammed3d.training import trainer

    data = write_nnunet_dataset(tmp_path / "Dataset006_T", n_cases=2)
    original = trainer.mask_only_iterations
    sent = []

    def send_sigterm_once(*args, **kwargs):  # called once per micro-batch inside the loop
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), sig)
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer, "mask_only_iterations", send_sigterm_once)
    run = tmp_path / "run"
    common = [f"data.roots=[{data}]", "train.batch_size=1", "train.epochs=2", "--no-progress"]
    assert main(["train", "--config", "tiny_cpu", "-o", str(run), *common]) == code
    out = capsys.readouterr().out
    assert f"stopped by {sig.name}" in out and f"--resume {run}" in out
    monkeypatch.setattr(trainer, "mask_only_iterations", original)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"


def test_every_logged_warning_reads_as_one(capsys) -> None:
    """A library warning logged without the word (``dataset.json says numTraining=6 but ...``)
    was printed bare among ``warning: ...`` lines; each is marked once, info lines are not."""
    import logging

    from sammed3d.cli import setup_logging

    setup_logging()
    try:
        log = logging.getLogger("sammed3d.data.layouts.nnunet")
        log.warning("%s: dataset.json says numTraining=%d", "ds", 6)
        log.warning("warning: already marked")
        log.warning("note: 2 class name(s) not in the catalogue")
        log.info("prepared 1 of 1 case")
        err = capsys.readouterr().err.splitlines()
    finally:
        logging.getLogger().handlers.clear()
    assert err == [
        "warning: ds: dataset.json says numTraining=6",
        "warning: already marked",
        "note: 2 class name(s) not in the catalogue",
        "prepared 1 of 1 case",
    ]
